"""The delta poller: reads Graph's users and groups delta, turns what changed into identity events, and only then
moves its checkpoint.

Why a poller next to the webhook: Graph drops or delays change notifications (graph.md §2.4, §2.5), so delta is the
source that cannot miss a change. Its contract is at-least-once: every event of a round is in the broker before the
round's deltaLink is saved (celery.md §4), so a crash or a broker outage mid-round means the same round is read
again, never that a change is skipped. Duplicates are cheap because events are hints and workers re-read Graph.

Mapping of a user item (graph.md §1.4), kept deliberately small:
- `@removed` reason `deleted` -> USER_HARD_DELETED; any other reason (`changed` = soft delete) -> USER_SOFT_DELETED.
- `accountEnabled: false` -> USER_DISABLED (straight to the revocation lane: a disable is a plain update in delta).
- anything else, including `accountEnabled: true` -> USER_CHANGED. Why not USER_ENABLED: delta returns every selected
  property of an updated user, so `accountEnabled: true` is on almost every ordinary update (a rename, a new mail) and
  says nothing about a re-enable. USER_CHANGED goes to the revocation lane's check_user, which re-reads the user and
  hands live users to the sync lane, where a real re-enable is reconciled.
Groups always map to GROUP_CHANGED; the sync lane re-reads membership.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import unquote

from producers.checkpoints import DeltaCheckpoints
from shared.dispatch import TaskSender, publish
from shared.errors import DeltaExpired, RetryableError
from shared.events import EventKind, EventSource, IdentityEvent
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

Resource = Literal["users", "groups"]
RESOURCES: tuple[Resource, ...] = ("users", "groups")

#: accountEnabled must be selected, or a disable never shows up in delta (graph.md §1.3, §1.4).
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
    where it would otherwise sit in front of real leavers."""
    if kind is EventKind.USER_CHANGED and item.get("accountEnabled") is True:
        return "sync.user_changed"
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


class DeltaPoller:
    def __init__(
        self,
        graph: DeltaSource,
        sender: TaskSender,
        redis: Any,
        settings: Settings,
        *,
        start_from_now: bool = False,
    ) -> None:
        self.graph = graph
        self.sender = sender
        self.settings = settings
        self.tenant = settings.graph_tenant_id or "default"
        self.checkpoints = DeltaCheckpoints(redis, self.tenant)
        self.start_from_now = start_from_now

    def latest_link(self, resource: Resource) -> str:
        """The "sync from now" request (graph.md §1.2): returns only a deltaLink, which then tracks our $select."""
        select = ",".join(SELECT[resource])
        return f"{self.settings.graph_url.rstrip('/')}/{resource}/delta?$select={select}&$deltatoken=latest"

    def run_round(self, resource: Resource, *, from_now: bool | None = None) -> RoundResult:
        """Read one full delta round, publish its events, then save the new deltaLink.

        `from_now` (default: the poller's `start_from_now`) applies only when no checkpoint exists: instead of a full
        enumeration (every user becomes an event, workers reconcile), the round just fetches a deltaLink for "now".
        Raises whatever the broker or Graph raised; the checkpoint is then untouched.
        """
        if resource not in RESOURCES:
            raise ValueError(f"unknown delta resource {resource!r}")
        start = self.checkpoints.get(resource)
        result = RoundResult(resource=resource)
        if start is None and (self.start_from_now if from_now is None else from_now):
            start = self.latest_link(resource)
            result.from_now = True
        full = start is None  # a full enumeration: every object that exists now, no tombstones
        try:
            collected = self._read(resource, start, result)
        except DeltaExpired as expired:
            # 410: the token is gone; Graph wants a full resync. No tombstones come back (graph.md §1.6).
            log.warning("delta_resync_required", resource=resource, tenant=self.tenant, had_location=bool(
                expired.location))
            self.checkpoints.clear(resource)
            self.checkpoints.finish_round(resource, start)
            start = self._resync_link(resource, getattr(expired, "location", None))
            result = RoundResult(resource=resource, resynced=True)
            collected = self._read(resource, start, result)  # a second 410 propagates: no resync loop
        self._publish(resource, start, collected, result)
        if resource == "users":
            self._reconcile_known(collected, full or result.resynced, result)
        if result.delta_link is None:
            raise RuntimeError(f"delta round for {resource} ended without a deltaLink")
        self.checkpoints.save(resource, result.delta_link)
        self.checkpoints.finish_round(resource, start)
        self.checkpoints.record_round(
            resource, events=result.events, pages=result.pages, items=result.items, resynced=result.resynced
        )
        log.info(
            "delta_round_done", resource=resource, tenant=self.tenant, pages=result.pages, items=result.items,
            duplicates=result.duplicates, events=result.events, skipped=result.skipped, resynced=result.resynced,
            from_now=result.from_now, kinds=dict(result.kinds),
        )
        return result

    def _reconcile_known(self, collected: dict[str, dict[str, Any]], full: bool, result: RoundResult) -> None:
        """Users deleted while our delta token was expired come back from a resync as... nothing: a full
        enumeration carries no tombstones (graph.md §1.6). So the poller remembers every user id delta showed it;
        after a full round, a remembered id that is missing is a user deleted unseen, and it goes to the revocation
        lane (the worker re-reads Graph and finds the Salesforce user through the stored link). Published before
        the deltaLink is saved, like every other event of the round."""
        live = [oid for oid, item in collected.items() if "@removed" not in item]
        if not full:
            self.checkpoints.track("users", live, [oid for oid, item in collected.items() if "@removed" in item])
            return
        vanished = self.checkpoints.vanished("users", live)
        for object_id in sorted(vanished):
            event = IdentityEvent(kind=EventKind.USER_HARD_DELETED, source=EventSource.DELTA, tenant=self.tenant,
                                  object_id=object_id)
            publish(self.sender, event)
            result.events += 1
            result.vanished += 1
            result.kinds[EventKind.USER_HARD_DELETED.value] += 1
        if vanished:
            log.warning("delta_users_vanished", count=len(vanished), tenant=self.tenant)
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
        select = SELECT[resource] if start is None else None  # tokens encode the original $select (graph.md §1.2)
        for page in self.graph.delta_pages(resource, start, select=select):
            result.pages += 1
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
                publish(self.sender, event, _task_for(kind, item))
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
        """Users then groups, every `delta_interval_s`, until `stop_event` is set. Never lets an error end the loop."""
        interval = self.settings.delta_interval_s
        while not stop_event.is_set():
            wait = interval
            for resource in RESOURCES:
                if stop_event.is_set():
                    return
                try:
                    self.run_round(resource)
                except RetryableError as err:
                    retry_after = float(getattr(err, "retry_after", None) or interval)
                    log.warning("delta_round_throttled", resource=resource, retry_after=retry_after)
                    wait = max(wait, retry_after)
                    break  # the other resource shares the same Graph budget; wait before asking again
                except Exception as err:
                    log.error("delta_round_failed", resource=resource, error=type(err).__name__, detail=str(err)[:300])
                    wait = min(interval, ERROR_BACKOFF_S)
            stop_event.wait(wait)
