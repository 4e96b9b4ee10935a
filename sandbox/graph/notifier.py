"""Change-notification delivery: turns directory changes into Graph webhook POSTs
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks).

Why a thread with its own queue: the Directory calls its listeners while the route still holds `state.lock`, and
outbound HTTP must never run under that lock. The listener only enqueues; one scheduler thread matches changes to
subscriptions, batches them per URL and hands POSTs to a small worker pool. Each endpoint has at most one POST in
flight, so a slow or dead endpoint ties up one worker and never delays a healthy one.

All due times (batching, retry backoff, the 4-hour retry window, throttling delays, lifecycle timing) are on the
sandbox clock, so tests that advance the clock see retries give up and lifecycle events fire without sleeping.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import random
import secrets
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox.graph.subscription_store import Subscription, SubscriptionStore, format_notification_datetime

log = logging.getLogger("sandbox.graph.notifier")

#: how often (real seconds) the scheduler sweeps expiry, lifecycle timers and counter windows
_SWEEP_INTERVAL_S = 0.1
_WORKERS = 8


def notification_ssl_context(ca_path: Path | None) -> ssl.SSLContext:
    """System trust store plus the sandbox's extra notification CA: how Graph would trust a public endpoint."""
    ctx = ssl.create_default_context()
    if ca_path is not None:
        ctx.load_verify_locations(cafile=str(ca_path))
    return ctx


def _notification_id() -> str:
    """Opaque, short id like Graph's (`lsgTZMr9KwAAA`)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(9)).decode().rstrip("=")


@dataclass
class _Item:
    """One notification (one `value[]` entry) on its way to one URL."""

    url: str
    body: dict[str, Any]
    kind: str  # "change" | "lifecycle"
    subscription_id: str
    change_type: str
    resource: str
    first_at: float
    due: float
    attempt: int = 0


@dataclass
class EndpointStats:
    """Slow-response accounting for one notification URL (Graph's slow-endpoint throttling)."""

    window_start: float
    total: int = 0
    slow: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    discarded: int = 0
    dropped: int = 0
    in_flight: bool = False
    last_status: int | None = None
    last_duration_ms: int | None = None
    history: dict[str, int] = field(default_factory=dict)

    def slow_pct(self) -> float:
        return 100.0 * self.slow / self.total if self.total else 0.0


class Notifier:
    """Delivers change and lifecycle notifications for the subscriptions in `store`."""

    def __init__(self, state: Any, store: SubscriptionStore) -> None:
        self.state = state
        self.store = store
        self._changes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._mu = threading.Lock()  # guards _pending and _stats; never held during I/O
        self._pending: dict[str, list[_Item]] = {}
        self._stats: dict[str, EndpointStats] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None
        self._client_ca: Path | None = None
        self._client_lock = threading.Lock()
        self._listening = False
        self._rng = random.Random()

    # --- lifecycle of the notifier itself -----------------------------------------------------------------------

    def attach(self) -> None:
        """Register as a Directory listener (once; the Directory may be created after the notifier)."""
        directory = self.state.directory
        if directory is not None and not self._listening:
            directory.add_listener(self.on_change)
            self._listening = True

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.attach()
        self._stop.clear()
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="graph-notify")
        self._thread = threading.Thread(target=self._run, name="graph-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._mu:  # cancelled batches never reach their `finally`; don't leave their endpoints stalled
            for st in self._stats.values():
                st.in_flight = False
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- inputs -------------------------------------------------------------------------------------------------

    def on_change(self, change: Any) -> None:
        """Directory listener. Called under `state.lock`, so it only enqueues."""
        self._changes.put(change)
        self._wake.set()

    def trigger_reauthorization(self, subscription_id: str) -> bool:
        """Send `reauthorizationRequired` now (admin API / tests). False if unknown or without lifecycle URL."""
        with self.state.lock:
            sub = self.store.get(subscription_id)
            if sub is None or not sub.lifecycle_url:
                return False
            item = self._lifecycle_item(sub, self.state.clock.time())
        self._enqueue([item])
        return True

    def trigger_removal(self, subscription_id: str) -> bool:
        """Remove a subscription as Graph may on its own, and send `subscriptionRemoved` to its lifecycle URL.

        Real Graph sends `subscriptionRemoved` for other resources (users and groups get none); the hook lets a
        client's "recreate it" path be exercised. False if the subscription is unknown.
        """
        with self.state.lock:
            sub = self.store.remove(subscription_id)
            if sub is None:
                return False
            now = self.state.clock.time()
            item = self._lifecycle_item(sub, now, "subscriptionRemoved") if sub.lifecycle_url else None
        self.state.activity.add("subscription_removed", subscription_id=sub.id, resource=sub.resource)
        if item is not None:
            self._enqueue([item])
        return True

    def reset(self) -> int:
        """Forget every subscription and everything queued (admin reset); returns how many subscriptions went."""
        with self.state.lock:
            removed = len(self.store.items)
            self.store.items.clear()
        self.clear()
        return removed

    # --- observability ------------------------------------------------------------------------------------------

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per-URL counters and throttling state (for the admin page and tests)."""
        with self._mu:
            out = {}
            for url, st in self._stats.items():
                out[url] = {
                    "total": st.total,
                    "slow": st.slow,
                    "slow_pct": round(st.slow_pct(), 1),
                    "state": self._endpoint_state(st),
                    "delivered": st.delivered,
                    "failed_attempts": st.failed_attempts,
                    "discarded": st.discarded,
                    "dropped": st.dropped,
                    "pending": len(self._pending.get(url, [])),
                    "in_flight": st.in_flight,
                    "last_status": st.last_status,
                    "last_duration_ms": st.last_duration_ms,
                }
            return out

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.state.activity.recent("webhook_delivery", limit)

    def clear(self) -> None:
        """Forget queued deliveries and endpoint counters (admin reset, test isolation); in-flight POSTs finish."""
        while True:
            try:
                self._changes.get_nowait()
            except queue.Empty:
                break
        with self._mu:
            self._pending.clear()
            for url in [u for u, st in self._stats.items() if not st.in_flight]:
                del self._stats[url]

    # --- scheduler ----------------------------------------------------------------------------------------------

    def _cfg(self, key: str, default: Any) -> Any:
        return self.state.config.get(f"graph.{key}", default)

    def _run(self) -> None:
        last_sweep = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.02)
            self._wake.clear()
            try:
                self._drain_changes()
                if time.monotonic() - last_sweep >= _SWEEP_INTERVAL_S:
                    last_sweep = time.monotonic()
                    self._sweep()
                self._dispatch()
            except Exception:  # the loop must survive any single bad change or config value
                log.exception("notifier_loop_failed")

    def _drain_changes(self) -> None:
        items: list[_Item] = []
        while True:
            try:
                change = self._changes.get_nowait()
            except queue.Empty:
                break
            items.extend(self._items_for_change(change))
        if items:
            self._enqueue(items)

    def _items_for_change(self, change: Any) -> list[_Item]:
        kind = str(getattr(change, "resource", "")).lower()
        object_id = str(getattr(change, "object_id", ""))
        change_type = str(getattr(change, "change_type", "updated"))
        now = self.state.clock.time()
        per_change = max(1, int(self._cfg("notifications_per_change", 1)))
        items = []
        with self.state.lock:
            subs = self.store.matching(kind, object_id, change_type, now)
            for sub in subs:
                for _ in range(per_change):
                    items.append(self._change_item(sub, kind, object_id, change_type, now))
        return items

    def _change_item(self, sub: Subscription, kind: str, object_id: str, change_type: str, now: float) -> _Item:
        """The basic (no resource data) notification users and groups get."""
        entity = "Users" if kind == "users" else "Groups"
        resource = f"{entity}/{object_id}"
        body = {
            "id": _notification_id(),
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": format_notification_datetime(sub.expiration),
            "clientState": sub.client_state,
            "changeType": change_type,
            "resource": resource,
            "tenantId": sub.tenant_id,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.User" if kind == "users" else "#Microsoft.Graph.Group",
                "@odata.id": resource,
                "id": object_id,
            },
        }
        return _Item(sub.notification_url, body, "change", sub.id, change_type, resource, now, now)

    def _lifecycle_item(self, sub: Subscription, now: float, event: str = "reauthorizationRequired") -> _Item:
        body = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": format_notification_datetime(sub.expiration),
            "tenantId": sub.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        assert sub.lifecycle_url
        return _Item(sub.lifecycle_url, body, "lifecycle", sub.id, event, sub.resource, now, now)

    def _enqueue(self, items: list[_Item]) -> None:
        """Apply faults and endpoint throttling, then queue for batching."""
        drop_rate = float(self.state.faults.get("graph.notification_drop_rate", 0.0) or 0.0)
        dup_rate = float(self.state.faults.get("graph.notification_duplicate_rate", 0.0) or 0.0)
        window = float(self._cfg("notification_batch_window_ms", 50)) / 1000.0
        throttle_delay = float(self._cfg("notification_throttle_delay_s", 600))
        dropped: list[tuple[_Item, str]] = []
        with self._mu:
            for item in items:
                st = self._stat(item.url, item.first_at)
                state = self._endpoint_state(st)
                if state == "dropping":
                    st.dropped += 1
                    dropped.append((item, "slow_endpoint"))
                    continue
                if drop_rate > 0 and self._rng.random() < drop_rate:
                    st.dropped += 1
                    dropped.append((item, "fault_drop_rate"))
                    continue
                item.due = item.first_at + window + (throttle_delay if state == "throttled" else 0.0)
                copies = [item]
                if dup_rate > 0 and self._rng.random() < dup_rate:
                    # a redelivery of the same notification (same id), a moment later, like a spurious retry
                    twin = _Item(**{**item.__dict__, "body": dict(item.body)})
                    twin.due = item.due + max(window, 0.2)
                    copies.append(twin)
                self._pending.setdefault(item.url, []).extend(copies)
        for item, reason in dropped:
            self._log("webhook_dropped", item, reason=reason)
        self._wake.set()

    def _stat(self, url: str, now: float) -> EndpointStats:
        st = self._stats.get(url)
        if st is None:
            st = self._stats[url] = EndpointStats(window_start=now)
        return st

    def _endpoint_state(self, st: EndpointStats) -> str:
        """healthy / throttled (>=10% slow after 100 notifications) / dropping (>=15%), as Graph rates endpoints."""
        if st.total < int(self._cfg("notification_slow_min_count", 100)):
            return "healthy"
        pct = st.slow_pct()
        if pct >= float(self._cfg("notification_drop_slow_pct", 15)):
            return "dropping"
        if pct >= float(self._cfg("notification_throttle_slow_pct", 10)):
            return "throttled"
        return "healthy"

    def _sweep(self) -> None:
        """Expire subscriptions, send due lifecycle events, flush slow-response counters."""
        now = self.state.clock.time()
        lifecycle: list[_Item] = []
        expired: list[Subscription] = []
        interval = float(self._cfg("lifecycle_reauth_interval_s", 900))
        with self.state.lock:
            for sub in self.store.expired(now):
                self.store.remove(sub.id)
                expired.append(sub)
            for sub in self.store.items.values():
                if sub.lifecycle_url and sub.next_reauth_at is not None and now >= sub.next_reauth_at:
                    lifecycle.append(self._lifecycle_item(sub, now))
                    sub.reauth_sent += 1
                    sub.next_reauth_at = now + interval
        for sub in expired:
            self.state.activity.add("subscription_expired", subscription_id=sub.id, resource=sub.resource)
        if lifecycle:
            self._enqueue(lifecycle)
        flush = float(self._cfg("notification_slow_window_s", 600))
        with self._mu:
            for st in self._stats.values():
                if now - st.window_start >= flush:
                    st.window_start, st.total, st.slow = now, 0, 0

    def _dispatch(self) -> None:
        """Start one POST per idle endpoint whose oldest notification is due; expire ones past the retry window."""
        if self._pool is None:
            return
        now = self.state.clock.time()
        retry_window = float(self._cfg("notification_retry_window_s", 4 * 3600))
        max_batch = max(1, int(self._cfg("notification_max_batch", 50)))
        window = float(self._cfg("notification_batch_window_ms", 50)) / 1000.0
        batches: list[tuple[str, list[_Item]]] = []
        discarded: list[_Item] = []
        with self._mu:
            for url, items in list(self._pending.items()):
                keep: list[_Item] = []
                gone: list[_Item] = []
                for item in items:
                    (gone if now - item.first_at > retry_window else keep).append(item)
                st = self._stat(url, now)
                st.discarded += len(gone)
                discarded.extend(gone)
                if not keep:
                    del self._pending[url]
                    continue
                self._pending[url] = keep
                if st.in_flight:
                    continue
                if min(i.due for i in keep) > now:
                    continue
                # everything due within the next batching window rides along, so a burst shares one value[]
                due = sorted((i for i in keep if i.due <= now + window), key=lambda i: i.due)
                kind = due[0].kind  # lifecycle and change notifications never share a POST
                batch = [i for i in due if i.kind == kind][:max_batch]
                ids = {id(i) for i in batch}
                self._pending[url] = [i for i in keep if id(i) not in ids]
                st.in_flight = True
                batches.append((url, batch))
        for item in discarded:
            self._log("webhook_discarded", item, reason="retry_window_elapsed")
        for url, batch in batches:
            self._pool.submit(self._deliver, url, batch)

    # --- delivery -----------------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        ca = self.state.notification_ca_path
        with self._client_lock:
            if self._client is None or ca != self._client_ca:
                if self._client is not None:
                    self._client.close()
                self._client = httpx.Client(
                    verify=notification_ssl_context(ca), trust_env=False, follow_redirects=False
                )
                self._client_ca = ca
            return self._client

    def _deliver(self, url: str, batch: list[_Item]) -> None:
        try:
            self._post(url, batch)
        except Exception:  # never lose the in-flight flag: the endpoint would stall forever
            log.exception("notification_delivery_failed url=%s", url)
            self._requeue(url, batch, self.state.clock.time(), throttled=False)
        finally:
            with self._mu:
                self._stat(url, self.state.clock.time()).in_flight = False
            self._wake.set()

    def _post(self, url: str, batch: list[_Item]) -> None:
        timeout = float(self._cfg("notification_timeout_s", 3.0))
        slow_ms = float(self._cfg("notification_slow_ms", 2900))
        for item in batch:
            item.attempt += 1
        body = json.dumps({"value": [i.body for i in batch]}, separators=(",", ":")).encode()
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            resp = self._http().post(
                url,
                content=body,
                headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": _USER_AGENT},
                timeout=timeout,
            )
            status = resp.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        duration_ms = int((time.monotonic() - started) * 1000)
        now = self.state.clock.time()
        slow = error == "timeout" or duration_ms > slow_ms
        with self._mu:
            st = self._stat(url, now)
            st.total += len(batch)
            st.slow += len(batch) if slow else 0
            st.last_status, st.last_duration_ms = status, duration_ms
            outcome = "delivered" if status is not None and 200 <= status < 300 else "failed"
            st.history[str(status or error)] = st.history.get(str(status or error), 0) + 1
            if outcome == "delivered":
                st.delivered += len(batch)
            else:
                st.failed_attempts += 1
            throttled = self._endpoint_state(st) != "healthy"
        first = batch[0]
        self.state.activity.add(
            "webhook_delivery",
            subscription_id=",".join(sorted({i.subscription_id for i in batch})),
            url=url,
            status=status if status is not None else error,
            duration_ms=duration_ms,
            attempt=first.attempt,
            change_type=first.change_type,
            resource=first.resource,
            notifications=len(batch),
            notification_kind=first.kind,
            slow=slow,
            at=self.state.clock.iso(),
        )
        if status is not None and 200 <= status < 300:
            return
        if status is not None and status < 500 and status != 429:  # 4xx (and stray 1xx/3xx): Graph gives up
            with self._mu:
                self._stat(url, now).discarded += len(batch)
            for item in batch:
                self._log("webhook_discarded", item, reason=f"http_{status}")
            return
        self._requeue(url, batch, now, throttled=throttled)

    def _requeue(self, url: str, batch: list[_Item], now: float, *, throttled: bool) -> None:
        """Schedule a retry with exponential backoff, or discard what the 4-hour window no longer allows."""
        base = float(self._cfg("notification_retry_base_s", 1.0))
        cap = float(self._cfg("notification_retry_max_delay_s", 600))
        window = float(self._cfg("notification_retry_window_s", 4 * 3600))
        throttle_delay = float(self._cfg("notification_throttle_delay_s", 600))
        keep: list[_Item] = []
        discarded: list[_Item] = []
        for item in batch:
            delay = min(cap, base * (2 ** max(0, item.attempt - 1)))
            if throttled:
                delay = max(delay, throttle_delay)
            item.due = now + delay
            (discarded if item.due - item.first_at > window else keep).append(item)
        with self._mu:
            if keep:
                self._pending.setdefault(url, []).extend(keep)
            self._stat(url, now).discarded += len(discarded)
        for item in discarded:
            self._log("webhook_discarded", item, reason="retry_window_elapsed")

    def _log(self, kind: str, item: _Item, **extra: Any) -> None:
        self.state.activity.add(
            kind,
            subscription_id=item.subscription_id,
            url=item.url,
            attempt=item.attempt,
            change_type=item.change_type,
            resource=item.resource,
            at=self.state.clock.iso(),
            **extra,
        )


_USER_AGENT = "idsync-sandbox-graph-notifier/1.0"
