"""Parking: messages that must wait longer than a Celery countdown may safely last.

Why: on Redis a countdown/ETA message sits in one worker's memory while kombu counts it as unacked; if the wait plus
the run exceeds the visibility timeout it is delivered again, and a killed worker loses the timer (celery.md §1.4,
§2.2). So long waits (a long Retry-After, a paused sync lane) live server-side in the sorted set `idsync:parked`,
scored by due time, and the scheduler (`workers/scheduler.py`) moves due messages back to their queue (Sidekiq's
retry set, celery.md §3.6).

`pop_due` takes due messages off the set in one Lua script, so two schedulers never republish the same message.
The window between that pop and the republish is where a crash could lose a message; the scheduler puts a message
back when the republish raises, but a scheduler killed in that millisecond window loses what it held.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from pydantic import BaseModel, Field

PARKED_KEY = "idsync:parked"

_POP_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #items > 0 then
  redis.call('ZREM', KEYS[1], unpack(items))
end
return items
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
    """Park (or put back) an existing `ParkedMessage` under its own `due_at`."""
    redis_client.zadd(PARKED_KEY, {message.model_dump_json(): message.due_at})


def pop_due(redis_client: redis.Redis, now: float, limit: int = 100) -> list[ParkedMessage]:
    """Atomically remove and return up to `limit` messages due at or before `now`, earliest first."""
    raw = redis_client.eval(_POP_DUE, 1, PARKED_KEY, repr(float(now)), int(limit))
    return [ParkedMessage.model_validate_json(item) for item in raw or []]


def count(redis_client: redis.Redis) -> int:
    return int(redis_client.zcard(PARKED_KEY))


def next_due(redis_client: redis.Redis) -> float | None:
    """The earliest due time, or None when nothing is parked (for status output and tests)."""
    first = redis_client.zrange(PARKED_KEY, 0, 0, withscores=True)
    return float(first[0][1]) if first else None
