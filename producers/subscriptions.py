"""Keeps Graph change-notification subscriptions for /users and /groups alive: create, renew before expiry,
reauthorize on lifecycle events, recreate when Graph has forgotten them.

Why it matters: a lapsed subscription fails silently; notifications just stop and leavers wait for the next delta
round. So the manager renews well before expiry, treats any renewal failure as "recreate", and records what it owns
in Redis so every replica (and `idsync status`) sees the same subscriptions. A Redis lock keeps two replicas from
creating duplicates (Graph caps subscriptions per app and tenant: docs/decisions.md#change-notifications).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.errors import IdsyncError, NotFound, PermanentError, RetryableError
from shared.logging import get_logger
from shared.redis_lock import RedisLock
from shared.redis_values import as_text
from shared.settings import Settings

log = get_logger(__name__)

RESOURCES = ("/users", "/groups")
#: Lock lease: longer than a few Graph calls, short enough that a crashed holder does not block renewals for long.
LOCK_TIMEOUT_S = 60
LOCK_WAIT_S = 10


class SubscriptionApi(Protocol):
    def create_subscription(
        self, resource: str, notification_url: str, lifecycle_url: str, client_state: str, expiration: datetime
    ) -> dict[str, Any]: ...
    def renew_subscription(self, sub_id: str, expiration: datetime) -> dict[str, Any]: ...
    def reauthorize_subscription(self, sub_id: str) -> None: ...
    def delete_subscription(self, sub_id: str) -> Any: ...
    def list_subscriptions(self) -> list[dict[str, Any]]: ...


def parse_graph_time(value: str) -> datetime:
    """Graph writes 7 fractional digits and a `Z` ("2024-05-01T11:00:00.0000000Z"); always returns an aware UTC time."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _norm_resource(resource: str) -> str:
    return "/" + resource.strip().strip("/").lower()


def subscriptions_key(tenant: str) -> str:
    """The Redis hash of recorded subscriptions: one field per resource, JSON {id, resource, expiry}."""
    return f"idsync:subscriptions:{tenant}"


def recorded_subscription_ids(redis: Any, tenant: str) -> set[str]:
    """The ids of the subscriptions the manager recorded for `tenant` (the webhook accepts only these)."""
    ids = set()
    for raw in redis.hvals(subscriptions_key(tenant)):
        try:
            record = json.loads(as_text(raw))
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("id"):
            ids.add(str(record["id"]))
    return ids


def subscription_status(redis: Any, settings: Settings) -> list[dict[str, Any]]:
    """Id, resource, expiry and seconds left per recorded subscription, for `idsync status` (no Graph call)."""
    now = datetime.now(UTC)
    out = []
    tenant = settings.graph_tenant_id or "default"
    for resource, raw in sorted(redis.hgetall(subscriptions_key(tenant)).items()):
        record = json.loads(as_text(raw))
        expiry = parse_graph_time(record["expiry"])
        out.append({"id": record["id"], "resource": as_text(resource), "expiry": record["expiry"],
                    "expires_in_s": round((expiry - now).total_seconds())})
    return out


class SubscriptionManager:
    def __init__(self, graph: SubscriptionApi, redis: Any, settings: Settings) -> None:
        self.graph = graph
        self.redis = redis
        self.settings = settings
        self.tenant = settings.graph_tenant_id or "default"
        self.key = subscriptions_key(self.tenant)
        self.notification_url = f"{settings.webhook_url.rstrip('/')}/graph/notifications"
        self.lifecycle_url = f"{settings.webhook_url.rstrip('/')}/graph/lifecycle"

    # --- state in Redis: one hash field per resource, JSON {id, resource, expiry}

    def _records(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.key)
        return {as_text(k): json.loads(as_text(v)) for k, v in raw.items()}

    def _record(self, resource: str, sub_id: str, expiry: datetime) -> dict[str, Any]:
        record = {"id": sub_id, "resource": resource, "expiry": expiry.astimezone(UTC).isoformat()}
        self.redis.hset(self.key, resource, json.dumps(record))
        return record

    def _lock(self, wait: float = LOCK_WAIT_S) -> Any:
        """One replica at a time creates, renews or deletes subscriptions (LockBusy, retried next tick, otherwise)."""
        return RedisLock(self.redis, f"{self.key}:lock", LOCK_TIMEOUT_S * 1000).held(wait)

    def _expiration(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + timedelta(minutes=self.settings.subscription_lifetime_min)

    # --- operations

    def ensure(self) -> list[dict[str, Any]]:
        """Make sure one live subscription per resource exists; returns the records.

        A recorded subscription is kept only if Graph still lists it and it has not expired. An unrecorded one that
        Graph lists for our URL and resource (Redis was wiped) is adopted rather than duplicated.
        """
        with self._lock():
            now = datetime.now(UTC)
            live = {s.get("id"): s for s in self.graph.list_subscriptions() if s.get("id")}
            records = self._records()
            out = []
            for resource in RESOURCES:
                record = records.get(resource)
                if record and record["id"] in live and parse_graph_time(record["expiry"]) > now:
                    out.append(record)
                    continue
                adopted = self._adoptable(resource, live.values(), now)
                if adopted is not None:
                    log.info("subscription_adopted", resource=resource, subscription_id=adopted["id"])
                    out.append(self._record(resource, adopted["id"], parse_graph_time(adopted["expirationDateTime"])))
                    continue
                out.append(self._create(resource, now))
            return out

    def _adoptable(self, resource: str, live: Any, now: datetime) -> dict[str, Any] | None:
        for sub in live:
            try:
                if (
                    _norm_resource(sub.get("resource", "")) == resource
                    and sub.get("notificationUrl") == self.notification_url
                    and parse_graph_time(sub["expirationDateTime"]) > now
                ):
                    return sub
            except (KeyError, ValueError):
                continue
        return None

    def _create(self, resource: str, now: datetime | None = None) -> dict[str, Any]:
        expiration = self._expiration(now)
        created = self.graph.create_subscription(
            resource,
            self.notification_url,
            self.lifecycle_url,
            self.settings.webhook_client_state.get_secret_value(),
            expiration,
        )
        expiry = parse_graph_time(created["expirationDateTime"]) if created.get("expirationDateTime") else expiration
        log.info("subscription_created", resource=resource, subscription_id=created["id"], expiry=expiry.isoformat())
        return self._record(resource, created["id"], expiry)

    def _renew_or_recreate(self, record: dict[str, Any], now: datetime, reauthorize: bool = False) -> dict[str, Any]:
        """Renew (after reauthorizing, if asked); on any permanent failure the subscription is recreated.

        A retryable failure propagates: the subscription still exists and the next tick tries again.
        """
        sub_id, resource = record["id"], record["resource"]
        try:
            if reauthorize:
                self.graph.reauthorize_subscription(sub_id)
            expiration = self._expiration(now)
            renewed = self.graph.renew_subscription(sub_id, expiration)
            granted = renewed.get("expirationDateTime")
            expiry = parse_graph_time(granted) if granted else expiration
            log.info("subscription_renewed", resource=resource, subscription_id=sub_id, expiry=expiry.isoformat(),
                     reauthorized=reauthorize)
            return self._record(resource, sub_id, expiry)
        except NotFound:
            log.warning("subscription_gone", resource=resource, subscription_id=sub_id)
        except PermanentError as err:
            log.warning("subscription_renew_failed", resource=resource, subscription_id=sub_id, error=str(err))
            self._delete_quietly(sub_id)
        return self._create(resource, now)

    def _delete_quietly(self, sub_id: str) -> None:
        try:
            self.graph.delete_subscription(sub_id)
        except IdsyncError as err:  # it may already be gone; the new one replaces it either way
            log.info("subscription_delete_failed", subscription_id=sub_id, error=str(err))

    def renew_due(self, now: datetime | None = None) -> int:
        """Renew every recorded subscription expiring within `subscription_renew_before_s`; returns how many."""
        now = now or datetime.now(UTC)
        horizon = now + timedelta(seconds=self.settings.subscription_renew_before_s)
        done = 0
        with self._lock():
            for record in self._records().values():
                if parse_graph_time(record["expiry"]) > horizon:
                    continue
                try:
                    self._renew_or_recreate(record, now)
                    done += 1
                except RetryableError as err:
                    log.warning("subscription_renew_deferred", resource=record["resource"], error=str(err),
                                retry_after=err.retry_after)
        return done

    def handle_lifecycle(self, subscription_id: str, event: str) -> None:
        """React to a lifecycle notification (docs/decisions.md#change-notifications). Users and groups only get
        `reauthorizationRequired`; `subscriptionRemoved` is handled too (recreate), `missed` is left to the delta
        poller."""
        record = next((r for r in self._records().values() if r["id"] == subscription_id), None)
        if record is None:
            log.warning("lifecycle_for_unknown_subscription", subscription_id=subscription_id, lifecycle_event=event)
            return
        with self._lock():
            now = datetime.now(UTC)
            if event == "reauthorizationRequired":
                self._renew_or_recreate(record, now, reauthorize=True)
            elif event == "subscriptionRemoved":
                self._create(record["resource"], now)
            else:
                log.info("lifecycle_event_ignored", subscription_id=subscription_id, lifecycle_event=event)

    def status(self) -> list[dict[str, Any]]:
        return subscription_status(self.redis, self.settings)

    def run_forever(self, stop_event: threading.Event, interval: float = 60) -> None:
        """Ensure, then renew what is due, every `interval` seconds; an error is logged and retried next tick.

        Why ensure on every tick (one list call): a subscription deleted behind our back sends no lifecycle event,
        and waiting for its recorded expiry would leave the webhook deaf for days.
        """
        while not stop_event.is_set():
            try:
                self.ensure()
                self.renew_due()
            except Exception as err:
                log.error("subscription_tick_failed", error=type(err).__name__, detail=str(err)[:300])
            stop_event.wait(interval)
