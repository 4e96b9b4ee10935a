"""The sync lane's backlog: Entra users whose Salesforce state must be planned again, coalesced per user.

Why not one Celery message per user event: a re-org or 5,000 users added to one group would cost 5,000 tasks and
5 Salesforce calls per user. Instead every sync hint marks the user *dirty* (a sorted set, so a user marked twice is
one entry) and batch tasks claim up to 200 dirty users at a time: one read of Salesforce state per batch and writes
through sObject Collections (200 records per call).

Durability: a claim moves users to an in-flight set with a lease, in one Lua script; `ack` removes them after the
batch's writes, `release` puts them back at once after a failure, and `requeue_expired` (run by beat) returns users
whose worker died without either. A user is therefore never lost between "claimed" and "applied" (at-least-once; the
engine's plans are idempotent, so applying twice is harmless).

The score is the latest time an event about the user was *observed* (by the webhook or the delta poller): a
revocation tombstone newer than that means the hint predates the revocation and must not undo it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DIRTY_KEY = "idsync:sync:dirty"
INFLIGHT_KEY = "idsync:sync:inflight"
OBSERVED_KEY = "idsync:sync:inflight:observed"
DRAIN_FLAG_KEY = "idsync:sync:drain_scheduled"

# KEYS: dirty, inflight, observed. ARGV: count, lease expiry. Returns {id, observed, id, observed, ...}.
_CLAIM = """
local items = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
for i = 1, #items, 2 do
  redis.call('ZREM', KEYS[1], items[i])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), items[i])
  redis.call('HSET', KEYS[3], items[i], items[i + 1])
end
return items
"""

# KEYS: dirty, inflight, observed. ARGV: ids. Puts claimed users back as dirty with their observation time.
_RELEASE = """
local n = 0
for i = 1, #ARGV do
  local observed = redis.call('HGET', KEYS[3], ARGV[i])
  if observed then
    redis.call('ZADD', KEYS[1], 'GT', tonumber(observed), ARGV[i])
    n = n + 1
  end
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
return n
"""

# KEYS: dirty, inflight, observed. ARGV: now. Leases that ran out go back to dirty.
_REQUEUE_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  local observed = redis.call('HGET', KEYS[3], id) or ARGV[1]
  redis.call('ZADD', KEYS[1], 'GT', tonumber(observed), id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return #ids
"""


@dataclass(frozen=True)
class Claimed:
    """A user taken from the backlog for one batch, with the latest observation time of its hints."""

    entra_id: str
    observed_at: float


class DirtyUsers:
    """The backlog of users to plan again (client with `decode_responses=True`)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._requeue = redis.register_script(_REQUEUE_EXPIRED)

    def mark(self, entra_ids: Iterable[str], observed_at: float | None = None) -> int:
        """Add users (or move their observation time forward); returns how many were not dirty before."""
        when = time.time() if observed_at is None else observed_at
        mapping = {i: when for i in entra_ids}
        if not mapping:
            return 0
        return int(self.redis.zadd(DIRTY_KEY, mapping, gt=True))

    def claim(self, count: int, lease_s: float) -> list[Claimed]:
        """Take up to `count` users, oldest observation first, leased for `lease_s` seconds."""
        raw = self._claim(keys=[DIRTY_KEY, INFLIGHT_KEY, OBSERVED_KEY], args=[count, time.time() + lease_s])
        return [Claimed(str(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]

    def ack(self, entra_ids: Iterable[str]) -> None:
        """The batch's writes are done: the users leave the in-flight set (a newer hint keeps them dirty)."""
        ids = list(entra_ids)
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(INFLIGHT_KEY, *ids)
        pipe.hdel(OBSERVED_KEY, *ids)
        pipe.execute()

    def release(self, entra_ids: Iterable[str]) -> int:
        """The batch failed: put its users back, to be claimed again."""
        ids = list(entra_ids)
        if not ids:
            return 0
        return int(self._release(keys=[DIRTY_KEY, INFLIGHT_KEY, OBSERVED_KEY], args=ids))

    def requeue_expired(self, now: float | None = None) -> int:
        """Return users whose lease ran out (their worker died) to the backlog; returns how many."""
        return int(self._requeue(keys=[DIRTY_KEY, INFLIGHT_KEY, OBSERVED_KEY], args=[now or time.time()]))

    def pending(self) -> int:
        return int(self.redis.zcard(DIRTY_KEY))

    def in_flight(self) -> int:
        return int(self.redis.zcard(INFLIGHT_KEY))

    def in_flight_ids(self) -> set[str]:
        return {str(m) for m in self.redis.zrange(INFLIGHT_KEY, 0, -1)}

    def oldest_age(self, now: float | None = None) -> float | None:
        first = self.redis.zrange(DIRTY_KEY, 0, 0, withscores=True)
        if not first:
            return None
        return max(0.0, (now or time.time()) - float(first[0][1]))

    def schedule_drain(self, ttl_s: float) -> bool:
        """True for the one caller that should publish a drain task now (a flag, not a lock: see workers)."""
        return bool(self.redis.set(DRAIN_FLAG_KEY, "1", nx=True, px=int(ttl_s * 1000)))

    def drain_started(self) -> None:
        """A drain task runs: hints arriving from now on must schedule another one."""
        self.redis.delete(DRAIN_FLAG_KEY)
