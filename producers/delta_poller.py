"""The delta poller: reads Graph's users and groups delta, turns what changed into identity events, and only then
moves its checkpoint.

Why a poller next to the webhook: Graph drops or delays change notifications
(docs/decisions.md#change-notifications), so delta is the source that cannot miss a change. Its contract is
at-least-once: every event of a round is in the broker before the round's deltaLink is saved
(docs/decisions.md#events-are-hints), so a crash or a broker outage mid-round means the same round is read again,
never that a change is skipped. Duplicates are cheap because events are hints and workers re-read Graph.

Mapping of a user item (docs/decisions.md#delta-queries), kept deliberately small:
- `@removed` reason `deleted` -> USER_HARD_DELETED; any other reason (`changed` = soft delete) -> USER_SOFT_DELETED.
- `accountEnabled: false` -> USER_DISABLED (straight to the revocation lane: a disable is a plain update in delta).
- anything else, including `accountEnabled: true` -> USER_CHANGED. Why not USER_ENABLED: delta returns every selected
  property of an updated user, so `accountEnabled: true` is on almost every ordinary update (a rename, a new mail) and
  says nothing about a re-enable. USER_CHANGED goes to the revocation lane's check_user, which re-reads the user and
  hands live users to the sync lane, where a real re-enable is reconciled.
Groups always map to GROUP_CHANGED; the sync lane re-reads membership.

The poller must never stop silently: each round's outcome (success time, or error class, message and a count of
failures in a row) is kept in Redis for `idsync health poller` and `idsync status`; a stored link that points at
another Graph base (the sandbox restarted on another port, a moved endpoint) is discarded for a full resync instead of
failing every round; and one Redis lease per tenant keeps replicas from running rounds over the same staging keys.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from producers.checkpoints import DeltaCheckpoints
from producers.poller_lease import LEASE_S, PollerBusy, PollerLease
from shared.dispatch import COLLAPSED, PendingWork, TaskSender, publish, sync_task_for
from shared.errors import DeltaExpired, RateLimited, RetryableError
from shared.events import EventKind, EventSource, IdentityEvent
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

Resource = Literal["users", "groups"]
RESOURCES: tuple[Resource, ...] = ("users", "groups")

#: accountEnabled must be selected, or a disable never shows up in delta (docs/decisions.md#delta-queries).
USER_SELECT = [
    "id", "accountEnabled", "userPrincipalName", "mail", "displayName", "employeeId", "userType", "externalUserState",
]
GROUP_SELECT = ["id", "displayName", "members"]
SELECT: dict[str, list[str]] = {"users": USER_SELECT, "groups": GROUP_SELECT}

#: Fingerprints are written to the round set in chunks: one Redis round-trip per chunk, not per event.
MARK_CHUNK = 100
#: After an unexpected error the loop waits this long (or the interval, if shorter) before trying again.
ERROR_BACKOFF_S = 30.0


class DeltaSource(Protocol):
    def delta_pages(self, resource: str, link: str | None, select: list[str] | None = None) -> Any: ...


@dataclass
class RoundResult:
    """What one round did; the poller keeps the same numbers in Redis for `idsync status`."""

    resource: str
    pages: int = 0
    items: int = 0  # items read, duplicates included
    duplicates: int = 0  # items folded into an earlier item of the same object
    events: int = 0  # events published in this round
    skipped: int = 0  # events already published by an earlier, failed attempt of this same round
    resynced: bool = False  # Graph answered 410 and the round restarted as a full enumeration
    from_now: bool = False  # the round only fetched a deltaLink ("$deltatoken=latest"), no objects
    vanished: int = 0  # users a full round no longer contains: deleted while unseen (sent for revocation)
    collapsed: int = 0  # revocation hints absorbed by a task already waiting for the same user
    kinds: Counter[str] = field(default_factory=Counter)
    delta_link: str | None = None
    # merged members@delta per group id, across pages: {"added": {...}, "removed": {...}}
    members: dict[str, dict[str, set[str]]] = field(default_factory=dict)


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Fold a later sighting of the same object into the earlier one: the later value of each property wins.

    Why a merge and not a replace: with `Prefer: return=minimal` or a group split across pages, a later sighting may
    carry fewer properties; replacing would forget an `accountEnabled: false` seen earlier in the same round. A
    removal replaces everything, and a plain item after a removal (a restore) replaces the removal.
    """
    if old is None or "@removed" in new or "@removed" in old:
        merged = dict(new)
        if old is not None and "members@delta" in old and "@removed" not in new and "@removed" not in old:
            merged["members@delta"] = list(old["members@delta"]) + list(new.get("members@delta", []))
        return merged
    merged = {**old, **new}
    if "members@delta" in old or "members@delta" in new:
        merged["members@delta"] = list(old.get("members@delta", [])) + list(new.get("members@delta", []))
    return merged


def user_event_kind(item: dict[str, Any]) -> EventKind:
    removed = item.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if isinstance(removed, dict) else None
        return EventKind.USER_HARD_DELETED if reason == "deleted" else EventKind.USER_SOFT_DELETED
    if item.get("accountEnabled") is False:
        return EventKind.USER_DISABLED
    return EventKind.USER_CHANGED


def _task_for(kind: EventKind, item: dict[str, Any]) -> str | None:
    """Delta, unlike a notification, tells us the user is enabled: such updates skip the revocation lane's triage
    and go straight to sync. This keeps an initial full enumeration (every user, once) off the revocation lane,
    where it would otherwise sit in front of real leavers. A B2B guest (userType Guest) goes to their CRM Contact
    (`sync.contact_changed`) rather than to provisioning."""
    if kind is EventKind.USER_CHANGED and item.get("accountEnabled") is True:
        return sync_task_for(item.get("userType"))
    return None  # the dispatch table decides


def _members(item: dict[str, Any]) -> dict[str, set[str]]:
    """Merge a group's members@delta slices; for one member the last entry in page order wins."""
    state: dict[str, bool] = {}
    for entry in item.get("members@delta", []):
        if isinstance(entry, dict) and entry.get("id"):
            state[entry["id"]] = "@removed" not in entry
    return {
        "added": {m for m, present in state.items() if present},
        "removed": {m for m, present in state.items() if not present},
    }


def _fingerprint(kind: EventKind, item: dict[str, Any]) -> str:
    state = json.dumps(item, sort_keys=True, default=str)
    return f"{item['id']}:{kind.value}:{hashlib.sha256(state.encode()).hexdigest()[:16]}"


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin_and_path(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme), parts.path


def link_base(link: str) -> str:
    """scheme://host:port of a link, for logs: never the query, which holds the delta token."""
    try:
        scheme, host, port, _ = _origin_and_path(link)
    except ValueError:
        return "<unparsable>"
    return f"{scheme}://{host}:{port}"


def link_matches_base(link: str, graph_url: str) -> bool:
    """True when `link` points under the configured Graph URL (same scheme, host, port and path prefix).

    A relative link is resolved against the configured URL by the client, so it always matches. Anything else is
    refused by the client ("refusing a link outside ...": the bearer token must never leave the configured host),
    so a stale one must be discarded here rather than fail every round.
    """
    if not urlsplit(link).scheme:
        return True
    try:
        scheme, host, port, path = _origin_and_path(link)
        b_scheme, b_host, b_port, b_path = _origin_and_path(graph_url.rstrip("/"))
    except ValueError:  # an unparsable port
        return False
    prefix = b_path.rstrip("/")
    return (scheme, host, port) == (b_scheme, b_host, b_port) and (path == prefix or path.startswith(prefix + "/"))


class DeltaPoller:
    def __init__(
        self,
        graph: DeltaSource,
        sender: TaskSender,
        redis: Any,
        settings: Settings,
        *,
        start_from_now: bool = False,
        lease_s: float = LEASE_S,
    ) -> None:
        self.graph = graph
        self.sender = sender
        self.redis = redis
        self.settings = settings
        self.tenant = settings.graph_tenant_id or "default"
        self.checkpoints = DeltaCheckpoints(redis, self.tenant)
        self.pending = PendingWork(redis)
        self.start_from_now = start_from_now
        self.lease_s = lease_s
        #: Set while this poller holds the tenant's lease (run_forever, run_once); checked before anything is saved.
        self.lease: PollerLease | None = None

    def latest_link(self, resource: Resource) -> str:
        """The "sync from now" request (`$deltatoken=latest`): only a deltaLink, which then tracks our $select."""
        select = ",".join(SELECT[resource])
        return f"{self.settings.graph_url.rstrip('/')}/{resource}/delta?$select={select}&$deltatoken=latest"

    def run_round(self, resource: Resource, *, from_now: bool | None = None) -> RoundResult:
        """Read one full delta round, publish its events, then save the new deltaLink.

        `from_now` (default: the poller's `start_from_now`) applies only when no checkpoint exists and no resync is
        pending: instead of a full enumeration (every user becomes an event, workers reconcile), the round just
        fetches a deltaLink for "now". Raises whatever the broker or Graph raised; the checkpoint is then untouched.
        Either way the outcome is recorded for `idsync health poller` and `idsync status`.
        """
        if resource not in RESOURCES:
            raise ValueError(f"unknown delta resource {resource!r}")
        try:
            result = self._round(resource, from_now)
        except Exception as err:
            self._record_outcome(resource, err)
            raise
        self._record_outcome(resource, None)
        return result

    def _record_outcome(self, resource: Resource, error: Exception | None) -> None:
        try:
            if error is None:
                self.checkpoints.record_success(resource)
            else:
                self.checkpoints.record_failure(resource, error)
        except Exception as err:  # noqa: BLE001 - Redis is down: the round's own error (if any) says more
            log.warning("delta_outcome_not_recorded", resource=resource, error=type(err).__name__)

    def _start(self, resource: Resource, from_now: bool | None, result: RoundResult) -> tuple[str | None, bool]:
        """Where this round starts, and whether it is a full enumeration (the vanished-users check applies)."""
        start = self.checkpoints.get(resource)
        if start is not None and not link_matches_base(start, self.settings.graph_url):
            # Logged once: the link is gone after this, and the resync marker carries the state from here on.
            log.warning("delta_link_base_changed", resource=resource, tenant=self.tenant,
                        stored_base=link_base(start), graph_base=link_base(self.settings.graph_url))
            self.checkpoints.discard(resource, "graph_url_changed")
            start = None
        pending = self.checkpoints.resync_pending(resource)
        if pending is not None:
            # A discarded link is owed a full enumeration, never "from now": that would skip the gap.
            log.info("delta_full_resync", resource=resource, tenant=self.tenant, reason=pending.get("reason"))
            result.resynced = True
            return None, True
        if start is None and (self.start_from_now if from_now is None else from_now):
            result.from_now = True
            return self.latest_link(resource), False
        return start, start is None

    def _round(self, resource: Resource, from_now: bool | None) -> RoundResult:
        result = RoundResult(resource=resource)
        start, full = self._start(resource, from_now, result)
        try:
            collected = self._read(resource, start, result)
        except DeltaExpired as expired:
            # 410: the token is gone; Graph wants a full resync. No tombstones come back
            # (docs/decisions.md#delta-queries).
            log.warning("delta_resync_required", resource=resource, tenant=self.tenant, had_location=bool(
                expired.location))
            self.checkpoints.discard(resource, "expired")
            self.checkpoints.finish_round(resource, start)
            start = self._resync_link(resource, getattr(expired, "location", None))
            result = RoundResult(resource=resource, resynced=True)
            full = True
            collected = self._read(resource, start, result)  # a second 410 propagates: no resync loop
        self._check_lease()
        self._publish(resource, start, collected, result)
        if resource == "users":
            self._reconcile_known(collected, full, result)
        if result.delta_link is None:
            raise RuntimeError(f"delta round for {resource} ended without a deltaLink")
        self._check_lease()
        self.checkpoints.save(resource, result.delta_link)
        self.checkpoints.finish_round(resource, start)
        self.checkpoints.record_round(
            resource, events=result.events, pages=result.pages, items=result.items, resynced=result.resynced
        )
        log.info(
            "delta_round_done", resource=resource, tenant=self.tenant, pages=result.pages, items=result.items,
            duplicates=result.duplicates, events=result.events, skipped=result.skipped, collapsed=result.collapsed,
            resynced=result.resynced, from_now=result.from_now, kinds=dict(result.kinds),
        )
        return result

    def _check_lease(self) -> None:
        """Before writing shared state: a poller that lost its lease (paused past it, Redis restarted) must not
        save a link or replace the known-users set that another replica may now own."""
        if self.lease is not None:
            self.lease.check()

    def _reconcile_known(self, collected: dict[str, dict[str, Any]], full: bool, result: RoundResult) -> None:
        """Users deleted while our delta token was expired come back from a resync as... nothing: a full enumeration
        carries no tombstones (docs/decisions.md#delta-queries). So the poller remembers every user id delta showed it;
        after a full round, a remembered id that is missing is a user deleted unseen, and it goes to the revocation lane
        (the worker re-reads Graph and finds the Salesforce user through the stored link). Published before the
        deltaLink is saved, like every other event of the round."""
        live = [oid for oid, item in collected.items() if "@removed" not in item]
        if not full:
            self.checkpoints.track("users", live, [oid for oid, item in collected.items() if "@removed" in item])
            return
        vanished = self.checkpoints.vanished("users", live)
        for object_id in sorted(vanished):
            event = IdentityEvent(kind=EventKind.USER_HARD_DELETED, source=EventSource.DELTA, tenant=self.tenant,
                                  object_id=object_id)
            if publish(self.sender, event, pending=self.pending) == COLLAPSED:
                result.collapsed += 1
            result.events += 1
            result.vanished += 1
            result.kinds[EventKind.USER_HARD_DELETED.value] += 1
        if vanished:
            log.warning("delta_users_vanished", count=len(vanished), tenant=self.tenant)
        self._check_lease()
        self.checkpoints.replace_known("users")

    def _resync_link(self, resource: Resource, location: str | None) -> str | None:
        """Resume from Graph's Location only if it still carries our $select; else from our own initial request.

        Why check: a Location without `$select` would track default properties only, which lack accountEnabled, so
        every later disable would be invisible to delta.
        """
        if not location:
            return None
        needed = "accountenabled" if resource == "users" else "members"
        return location if needed in unquote(location).lower() else None

    def _read(self, resource: Resource, start: str | None, result: RoundResult) -> dict[str, dict[str, Any]]:
        collected: dict[str, dict[str, Any]] = {}
        select = SELECT[resource] if start is None else None  # tokens encode the original $select
        for page in self.graph.delta_pages(resource, start, select=select):
            result.pages += 1
            self.checkpoints.record_progress(resource)
            for item in page.get("value", []):
                object_id = item.get("id")
                if not object_id:
                    log.warning("delta_item_without_id", resource=resource)
                    continue
                result.items += 1
                if object_id in collected:
                    result.duplicates += 1
                collected[object_id] = _merge(collected.get(object_id), item)
            if page.get("@odata.deltaLink"):
                result.delta_link = page["@odata.deltaLink"]
        return collected

    def _publish(
        self, resource: Resource, start: str | None, collected: dict[str, dict[str, Any]], result: RoundResult
    ) -> None:
        done = self.checkpoints.published_in_round(resource, start)
        pending: list[str] = []
        try:
            for object_id, item in collected.items():
                if resource == "users":
                    kind = user_event_kind(item)
                else:
                    kind = EventKind.GROUP_CHANGED
                    result.members[object_id] = _members(item)
                fingerprint = _fingerprint(kind, item)
                if fingerprint in done:
                    result.skipped += 1
                    continue
                event = IdentityEvent(kind=kind, source=EventSource.DELTA, tenant=self.tenant, object_id=object_id)
                if publish(self.sender, event, _task_for(kind, item), pending=self.pending) == COLLAPSED:
                    result.collapsed += 1
                result.events += 1
                result.kinds[kind.value] += 1
                pending.append(fingerprint)
                if len(pending) >= MARK_CHUNK:
                    self.checkpoints.mark_published(resource, start, pending)
                    pending = []
        finally:
            if pending:
                try:
                    self.checkpoints.mark_published(resource, start, pending)
                except Exception:  # best effort: losing the marks only means a few duplicate hints later
                    log.warning("delta_mark_failed", resource=resource, count=len(pending))

    def run_forever(self, stop_event: threading.Event) -> None:
        """Users then groups, every `delta_interval_s`, until `stop_event` is set. Never lets an error end the loop.

        Only the holder of the tenant's lease polls; another replica waits on standby (and says so once) and takes
        over when the holder stops renewing.
        """
        interval = self.settings.delta_interval_s
        lease = PollerLease(self.redis, self.tenant, lease_s=self.lease_s)
        standby = False
        try:
            while not stop_event.is_set():
                if not lease.held():
                    try:
                        acquired = lease.acquire()
                    except Exception as err:  # noqa: BLE001 - Redis down: nothing can poll; try again shortly
                        log.error("delta_lease_failed", tenant=self.tenant, error=type(err).__name__)
                        stop_event.wait(min(interval, ERROR_BACKOFF_S))
                        continue
                    if not acquired:
                        if not standby:
                            log.info("delta_poller_standby", tenant=self.tenant, holder=lease.holder(),
                                     reason="another poller holds this tenant's lease")
                            standby = True
                        # Retry well within a lease: a holder killed without releasing is replaced within about
                        # one lease period, not a lease plus a whole polling interval.
                        stop_event.wait(min(interval, self.lease_s / 3))
                        continue
                    log.info("delta_poller_active", tenant=self.tenant, took_over=standby)
                    standby = False
                self.lease = lease
                stop_event.wait(self._cycle(stop_event, interval))
        finally:
            self.lease = None
            lease.release()

    def run_once(self) -> list[RoundResult]:
        """One users+groups round under the tenant's lease (`idsync poll --once`); `PollerBusy` if a running
        poller holds it."""
        lease = PollerLease(self.redis, self.tenant, lease_s=self.lease_s)
        if not lease.acquire():
            raise PollerBusy(self.tenant, lease.holder())
        self.lease = lease
        try:
            return [self.run_round(resource) for resource in RESOURCES]
        finally:
            self.lease = None
            lease.release()

    def _cycle(self, stop_event: threading.Event, interval: float) -> float:
        """One users+groups pass; returns how long to wait before the next."""
        wait = interval
        for resource in RESOURCES:
            if stop_event.is_set():
                return 0.0
            try:
                self.run_round(resource)
            except RateLimited as err:
                retry_after = float(err.retry_after or interval)
                log.warning("delta_round_throttled", resource=resource, error=type(err).__name__,
                            retry_after=retry_after)
                wait = max(wait, retry_after)
                break  # the other resource shares the same Graph budget; wait before asking again
            except RetryableError as err:  # a connection error, a timeout, a 5xx: not throttling
                retry_after = float(err.retry_after or interval)
                log.warning("delta_round_failed_retrying", resource=resource, error=type(err).__name__,
                            detail=str(err)[:300], retry_in=retry_after)
                wait = max(wait, retry_after)
                break  # the same cause would fail the other resource too
            except Exception as err:
                log.error("delta_round_failed", resource=resource, error=type(err).__name__, detail=str(err)[:300])
                wait = min(interval, ERROR_BACKOFF_S)
        return wait
