"""Parking: messages that must wait longer than a Celery countdown may safely last.

Why: on Redis a countdown/ETA message sits in one worker's memory while kombu counts it as unacked; if the wait plus
the run exceeds the visibility timeout it is delivered again, and a killed worker loses the timer (see "Visibility
timeout" in https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html). So long waits (a
long Retry-After, a paused sync lane) live server-side in the sorted set `idsync:parked`, scored by due time, and the
scheduler (`workers/scheduler.py`) moves due messages back to their queue (like Sidekiq's retry set).

Why a lease, not a pop: a message taken off the set and then lost with its scheduler (killed between the pop and the
republish) would be gone for good. `lease_due` moves due messages, in one Lua script, into `idsync:parked:inflight`
scored by the lease's expiry; `ack` removes one only after its republish returned, `release` puts it back at once when
the republish failed, and `requeue_expired` (run by every scheduler pass) re-parks leases whose scheduler died.
Two schedulers never lease the same message; a scheduler dying after the republish but before its `ack` makes the
message come back once more (at least once, never lost; tasks are idempotent).

Per-lane counts (`idsync status`) are kept in the hash `idsync:parked:lanes`, changed in the same scripts as the sets,
so reading them is O(1) however many messages are parked. A message counts as parked until it is acknowledged.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from pydantic import BaseModel, Field, PrivateAttr

from shared.dispatch import LANES

PARKED_KEY = "idsync:parked"
INFLIGHT_KEY = f"{PARKED_KEY}:inflight"
LANE_COUNTS_KEY = f"{PARKED_KEY}:lanes"

#: How long a scheduler may hold leased messages before another scheduler parks them again; far longer than a
#: batch of publishes takes, short enough that a crashed scheduler delays its messages by a minute at most.
LEASE_S = 60.0

# KEYS: parked, inflight, counts; ARGV: score, member, lane. Counted once, however often it is parked again.
_PARK = """
if redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) == 1 and redis.call('ZSCORE', KEYS[2], ARGV[2]) == false then
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
end
return 1
"""

# KEYS: parked, inflight; ARGV: now, limit, lease expiry.
_LEASE_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, item in ipairs(items) do
  redis.call('ZREM', KEYS[1], item)
  redis.call('ZADD', KEYS[2], ARGV[3], item)
end
return items
"""

# KEYS: inflight, counts; ARGV: member, lane.
_ACK = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if tonumber(redis.call('HINCRBY', KEYS[2], ARGV[2], -1)) < 0 then
    redis.call('HSET', KEYS[2], ARGV[2], 0)
  end
  return 1
end
return 0
"""

# KEYS: inflight, parked; ARGV: member, due score. Only a message still leased goes back (never one acked).
_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: inflight, parked; ARGV: now, limit. An expired lease is due at once: its due time has passed already.
_REQUEUE_EXPIRED = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, item in ipairs(items) do
  redis.call('ZREM', KEYS[1], item)
  redis.call('ZADD', KEYS[2], ARGV[1], item)
end
return #items
"""


class ParkedMessage(BaseModel):
    """A Celery message to publish again at `due_at`, with its task id and retry count so counters carry on."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    queue: str
    due_at: float
    parked_at: float = Field(default_factory=time.time)
    task_id: str | None = None
    retries: int = 0

    #: The exact set member this message was read from: `ack`/`release` must name it byte for byte.
    _member: str | None = PrivateAttr(default=None)

    @property
    def member(self) -> str:
        return self._member if self._member is not None else self.model_dump_json()

    @classmethod
    def from_member(cls, member: str) -> ParkedMessage:
        message = cls.model_validate_json(member)
        message._member = member
        return message


def park(
    redis_client: redis.Redis,
    task_name: str,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    headers: dict[str, Any],
    queue: str,
    due_at: float,
    *,
    task_id: str | None = None,
    retries: int = 0,
) -> None:
    """Park one message until `due_at` (epoch seconds)."""
    park_message(
        redis_client,
        ParkedMessage(
            task=task_name,
            args=list(args),
            kwargs=dict(kwargs),
            headers=dict(headers),
            queue=queue,
            due_at=due_at,
            task_id=task_id,
            retries=retries,
        ),
    )


def park_message(redis_client: redis.Redis, message: ParkedMessage) -> None:
    """Park an existing `ParkedMessage` under its own `due_at`."""
    redis_client.eval(
        _PARK, 3, PARKED_KEY, INFLIGHT_KEY, LANE_COUNTS_KEY, repr(float(message.due_at)), message.member, message.queue
    )


def lease_due(
    redis_client: redis.Redis, now: float, limit: int = 100, lease_s: float = LEASE_S
) -> list[ParkedMessage]:
    """Lease up to `limit` messages due at or before `now`, earliest first; each must be `ack`ed or `release`d."""
    raw = redis_client.eval(
        _LEASE_DUE, 2, PARKED_KEY, INFLIGHT_KEY, repr(float(now)), int(limit), repr(float(now + lease_s))
    )
    return [ParkedMessage.from_member(item) for item in raw or []]


def ack(redis_client: redis.Redis, message: ParkedMessage) -> bool:
    """The message was republished: forget it. False if its lease had expired and it was parked again meanwhile."""
    return bool(redis_client.eval(_ACK, 2, INFLIGHT_KEY, LANE_COUNTS_KEY, message.member, message.queue))


def release(redis_client: redis.Redis, message: ParkedMessage) -> bool:
    """The republish failed: park the message again under its original due time, for the next pass."""
    return bool(redis_client.eval(_RELEASE, 2, INFLIGHT_KEY, PARKED_KEY, message.member, repr(float(message.due_at))))


def requeue_expired(redis_client: redis.Redis, now: float, limit: int = 1000) -> int:
    """Park again what a dead scheduler had leased (lease expired); returns how many."""
    return int(redis_client.eval(_REQUEUE_EXPIRED, 2, INFLIGHT_KEY, PARKED_KEY, repr(float(now)), int(limit)))


def count(redis_client: redis.Redis) -> int:
    """Every parked message, leased ones included."""
    return int(redis_client.zcard(PARKED_KEY)) + int(redis_client.zcard(INFLIGHT_KEY))


def count_by_lane(redis_client: redis.Redis) -> dict[str, int]:
    """Parked messages per lane (leased ones included), from the counters kept with the sets."""
    stored = redis_client.hgetall(LANE_COUNTS_KEY) or {}
    return {lane: max(0, int(stored.get(lane, 0) or 0)) for lane in LANES}


def next_due(redis_client: redis.Redis) -> float | None:
    """The earliest due time, or None when nothing is parked (for status output and tests)."""
    first = redis_client.zrange(PARKED_KEY, 0, 0, withscores=True)
    return float(first[0][1]) if first else None
