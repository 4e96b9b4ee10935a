"""One delta poller per tenant: a Redis lease, renewed in the background while held.

Why: the poller's round state lives in shared Redis keys (the per-round "published" set, the staged known-users set,
the checkpoint). Two replicas running rounds at once would interleave writes to them: one could replace the known
users with a half-staged set, or save a link past events the other has not published. The lease makes every replica
but one a standby that takes over when the holder stops renewing (crash, kill, network partition).

Why a lease renewed by a thread rather than a lock held for "the round": a first enumeration of a large tenant takes
minutes; a lock timeout that long would leave the tenant unpolled for as long after a crash.
"""

from __future__ import annotations

import threading
from typing import Any

from redis.exceptions import RedisError

from shared.logging import get_logger
from shared.redis_lock import RedisLock

log = get_logger(__name__)

#: A crashed holder blocks takeover for at most this long; renewal runs every third of it.
LEASE_S = 60.0


class LeaseLost(Exception):  # noqa: N818 - a state, reported as such
    """This poller no longer holds the tenant's lease; it must not save anything."""


class PollerBusy(Exception):  # noqa: N818 - a state, reported as such
    """Another poller holds the tenant's lease."""

    def __init__(self, tenant: str, holder: str | None) -> None:
        super().__init__(f"another delta poller holds the lease for tenant {tenant} ({holder or 'unknown holder'}); "
                         "it is polling already")
        self.tenant = tenant
        self.holder = holder


class PollerLease:
    def __init__(self, redis: Any, tenant: str, *, lease_s: float = LEASE_S) -> None:
        self.redis = redis
        self.key = f"idsync:delta:{tenant}:lock"
        self.lease_s = lease_s
        # The token names the holder (host:pid:nonce), so a standby can say who is polling.
        self._lock = RedisLock(redis, self.key, int(lease_s * 1000))
        self._held = False
        self._lost = threading.Event()
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if free (never waits); starts the renewal thread."""
        if not self._lock.acquire():
            return False
        self._held = True
        self._lost.clear()
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew, name="delta-lease", daemon=True)
        self._renewer.start()
        return True

    def held(self) -> bool:
        return self._held and not self._lost.is_set()

    def check(self) -> None:
        if not self.held():
            raise LeaseLost("this poller lost the tenant's lease; another replica may be polling")

    def holder(self) -> str | None:
        """Who holds the lease now (host:pid:nonce), for the standby's log line."""
        try:
            return self._lock.holder()
        except RedisError:
            return None

    def release(self) -> None:
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        if self._held and not self._lost.is_set():
            try:
                self._lock.release()
            except RedisError:  # Redis gone: the lease lapses on its own
                pass
        self._held = False

    def _renew(self) -> None:
        while not self._stop_renewing.wait(self.lease_s / 3):
            try:
                renewed = self._lock.renew()
            except RedisError as err:
                # Redis unreachable: keep trying; if it stays away past the lease, the next renewal says "lost".
                log.warning("delta_lease_renew_failed", key=self.key, error=type(err).__name__)
                continue
            if not renewed:
                log.error("delta_lease_lost", key=self.key, reason="expired or taken over before renewal")
                self._lost.set()
                return
