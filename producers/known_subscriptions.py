"""Which subscription ids the webhook accepts: those the subscription manager recorded in Redis, cached briefly.

Why check at all: a valid clientState alone let one POST of thousands of made-up items through. Graph only ever sends
notifications for subscriptions we created, so an item naming any other subscription is dropped.
Why a cache: the check runs per item, and a flood must not become a Redis round trip per item. Why refresh early on a
miss: a subscription just (re)created by the manager must be accepted within about a second, not after the whole
cache lifetime, or its first notifications would be dropped (the delta poller would still catch them, later).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from producers.subscriptions import recorded_subscription_ids

#: How long the recorded ids are trusted without asking Redis again.
CACHE_TTL_S = 5.0
#: An unknown id triggers a reload at most this often, so a flood of made-up ids costs at most five reads per second.
MISS_RELOAD_S = 0.2


class KnownSubscriptions:
    def __init__(
        self,
        redis: Any,
        tenant: str,
        *,
        ttl_s: float = CACHE_TTL_S,
        miss_reload_s: float = MISS_RELOAD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.tenant = tenant
        self.ttl_s = ttl_s
        self.miss_reload_s = miss_reload_s
        self.clock = clock
        self._ids: frozenset[str] | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def __contains__(self, subscription_id: object) -> bool:
        """Raises whatever Redis raises when a reload is due: the caller answers 503 and Graph retries."""
        now = self.clock()
        with self._lock:
            age = now - self._loaded_at
            if self._ids is None or age > self.ttl_s or (subscription_id not in self._ids and age > self.miss_reload_s):
                self._ids = frozenset(recorded_subscription_ids(self.redis, self.tenant))
                self._loaded_at = now
            return subscription_id in self._ids

    def invalidate(self) -> None:
        """Forget the cached ids: this process just (re)created a subscription, whose notifications may follow
        within milliseconds (seen with subscriptionRemoved: the replacement's first notification came 0.2 s later)."""
        with self._lock:
            self._ids = None
