"""The dead-letter queue: where a message goes when retrying cannot help, so an operator can read why and replay it.

Why our own: on Redis, Celery's `Reject(requeue=False)` simply deletes the message (docs/decisions.md#dead-letters).
Every path that gives up on a message (permanent error, retries exhausted, a poison message that kills its worker, a
failed retry publish) writes here explicitly first.

Layout (Sidekiq's "dead" set, docs/decisions.md#dead-letters): one sorted set per lane, `idsync:dlq:{lane}`, member =
entry id, score = last failure time; the entries themselves as JSON in one hash `idsync:dlq:entries` (so `get(id)` needs
no lane). The size and age caps are applied in the same MULTI as the insert, so the DLQ can never grow without bound;
what a cap drops is logged and counted per lane (`idsync:dlq:dropped`, shown by `idsync status`), never lost silently.
An entry's id is the Celery task id: dead-lettering the same task id again updates the entry (attempts,
last_failed_at, history) and keeps first_failed_at.

Attempt history: a message usually fails several times (retries, parking) before it is dead-lettered, under one task
id. Each failed attempt is appended to `idsync:attempts:{task_id}` (`AttemptLog`, capped, expiring), and the dead
letter takes that list as its `history` and its first failure time from it: an operator sees when trouble started
and what each attempt hit, not only the last error.
"""

from __future__ import annotations

import time
import traceback as tb_module
import uuid
from typing import Any, cast

import redis
from pydantic import BaseModel, Field

from shared.dispatch import LANES
from shared.logging import get_logger

log = get_logger("idsync.dlq")

KEY_PREFIX = "idsync:dlq"
ENTRIES_KEY = f"{KEY_PREFIX}:entries"
CLAIM_PREFIX = f"{KEY_PREFIX}:claim"
#: Hash: `{lane}` -> entries dropped by the size/age cap so far, `{lane}:last_at` -> when the last one was dropped.
DROPPED_KEY = f"{KEY_PREFIX}:dropped"
ATTEMPTS_PREFIX = "idsync:attempts"

#: Attempts kept per entry: enough to see a pattern (always the same error? a different one each time?).
MAX_HISTORY = 10
#: An attempt's error message is cut here: the history is for reading at a glance; the traceback has the rest.
MAX_ATTEMPT_MESSAGE = 500

#: Enough frames to see where an error came from, small enough that 10,000 entries stay cheap.
MAX_TRACEBACK_FRAMES = 20
MAX_TRACEBACK_BYTES = 8 * 1024


def lane_key(lane: str) -> str:
    return f"{KEY_PREFIX}:{lane}"


class Attempt(BaseModel):
    """One failed execution: when, which error class, what it said."""

    time: float
    error_class: str
    message: str = ""

    @classmethod
    def now(cls, error_class: str, message: str) -> Attempt:
        return cls(time=time.time(), error_class=error_class, message=message[:MAX_ATTEMPT_MESSAGE])


class DeadLetter(BaseModel):
    """Everything needed to understand a failure and to republish the message unchanged."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    lane: str
    error_class: str
    error_message: str = ""
    traceback: str = ""
    attempts: int = 1
    first_failed_at: float = Field(default_factory=time.time)
    last_failed_at: float = Field(default_factory=time.time)
    correlation_id: str | None = None
    event_id: str | None = None
    #: The last `MAX_HISTORY` failed attempts, oldest first (entries written before this field have none).
    history: list[Attempt] = Field(default_factory=list)


def trim_traceback(text: str, max_frames: int = MAX_TRACEBACK_FRAMES, max_bytes: int = MAX_TRACEBACK_BYTES) -> str:
    """Keep the innermost `max_frames` frames and at most `max_bytes` (the tail: the error line is last)."""
    if not text:
        return ""
    lines = text.splitlines()
    frame_starts = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    if len(frame_starts) > max_frames:
        first, keep_from = frame_starts[0], frame_starts[-max_frames]
        omitted = len(frame_starts) - max_frames
        lines = lines[:first] + [f"  ... {omitted} frames omitted ..."] + lines[keep_from:]
    out = "\n".join(lines)
    raw = out.encode("utf-8")
    if len(raw) > max_bytes:
        out = "...(truncated)\n" + raw[-max_bytes:].decode("utf-8", errors="ignore")
    return out


def format_traceback(exc: BaseException) -> str:
    return trim_traceback("".join(tb_module.format_exception(type(exc), exc, exc.__traceback__)))


class DeadLetterQueue:
    """Bounded, per-lane dead letters in Redis (client must use `decode_responses=True`)."""

    def __init__(self, redis_client: redis.Redis, max_entries: int, max_age_s: float) -> None:
        self.redis = redis_client
        self.max_entries = max_entries
        self.max_age_s = max_age_s

    # --- writing -----------------------------------------------------------------------------------------------

    def put(self, entry: DeadLetter) -> str:
        """Store `entry` (merging with an earlier entry of the same id) and trim the lane; returns the id."""
        zkey = lane_key(entry.lane)

        def txn(pipe: redis.client.Pipeline) -> None:
            stored = entry
            previous = pipe.hget(ENTRIES_KEY, entry.id)
            if previous:
                old = DeadLetter.model_validate_json(previous)
                stored = entry.model_copy(
                    update={
                        "first_failed_at": min(old.first_failed_at, entry.first_failed_at),
                        "attempts": max(entry.attempts, old.attempts + 1),
                        "history": [*old.history, *entry.history][-MAX_HISTORY:],
                    }
                )
            now = time.time()
            too_old = pipe.zrangebyscore(zkey, "-inf", f"({now - self.max_age_s}")
            size = pipe.zcard(zkey) + (0 if previous else 1)
            overflow = max(0, size - self.max_entries)
            # Oldest first; the new entry scores "now", so it is never among the overflow it causes.
            oldest = pipe.zrange(zkey, 0, overflow - 1) if overflow else []
            doomed = [m for m in dict.fromkeys([*too_old, *oldest]) if m != entry.id]
            pipe.multi()
            pipe.zadd(zkey, {stored.id: stored.last_failed_at})
            pipe.hset(ENTRIES_KEY, stored.id, stored.model_dump_json())
            if doomed:
                pipe.zrem(zkey, *doomed)
                pipe.hdel(ENTRIES_KEY, *doomed)
                pipe.hincrby(DROPPED_KEY, entry.lane, len(doomed))
                pipe.hset(DROPPED_KEY, f"{entry.lane}:last_at", repr(now))
            # The transaction may run again (a WATCHed key changed): report only what the last run dropped.
            dropped[:] = doomed
            aged[:] = [m for m in doomed if m in set(too_old)]

        dropped: list[str] = []
        aged: list[str] = []
        self.redis.transaction(txn, zkey, ENTRIES_KEY)
        if dropped:
            # Warning, not info: each of these was a message idsync gave up on, and now its record is gone too.
            log.warning(
                "dlq_entries_dropped",
                lane=entry.lane,
                count=len(dropped),
                too_old=len(aged),
                over_size=len(dropped) - len(aged),
                max_entries=self.max_entries,
                max_age_s=self.max_age_s,
                entry_ids=dropped[:20],
            )
        return entry.id

    def remove(self, entry_id: str) -> bool:
        """Delete one entry; True only for the caller that actually removed it."""
        raw = self.redis.hget(ENTRIES_KEY, entry_id)
        if raw is None:
            return False
        lane = DeadLetter.model_validate_json(raw).lane
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(lane_key(lane), entry_id)
        pipe.hdel(ENTRIES_KEY, entry_id)
        _, removed = pipe.execute()
        return bool(removed)

    def purge(self, older_than_s: float, lane: str | None = None) -> int:
        """Delete entries whose last failure is older than `older_than_s`; returns how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for name in self._lanes(lane):
            zkey = lane_key(name)
            ids = self.redis.zrangebyscore(zkey, "-inf", f"({cutoff}")
            if not ids:
                continue
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(zkey, *ids)
            pipe.hdel(ENTRIES_KEY, *ids)
            _, n = pipe.execute()
            removed += int(n)
        return removed

    # --- reading -----------------------------------------------------------------------------------------------

    def get(self, entry_id: str) -> DeadLetter | None:
        raw = self.redis.hget(ENTRIES_KEY, entry_id)
        return DeadLetter.model_validate_json(raw) if raw else None

    def list(self, lane: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Newest failures first, across lanes unless `lane` is given."""
        scored: list[tuple[float, str]] = []
        for name in self._lanes(lane):
            # redis-py types every ZSET range reply alike; with scores it is (member, score) pairs.
            pairs = cast(
                "list[tuple[str, float]]",
                self.redis.zrevrange(lane_key(name), 0, max(limit - 1, 0), withscores=True),
            )
            for member, score in pairs:
                scored.append((float(score), member))
        scored.sort(reverse=True)
        ids = [member for _, member in scored[:limit]]
        if not ids:
            return []
        return [DeadLetter.model_validate_json(raw) for raw in self.redis.hmget(ENTRIES_KEY, ids) if raw]

    def size(self, lane: str | None = None) -> int:
        return sum(int(self.redis.zcard(lane_key(name))) for name in self._lanes(lane))

    def dropped(self, lane: str) -> tuple[int, float | None]:
        """How many entries of `lane` the size/age cap has dropped so far, and when it last dropped one."""
        count, last_at = self.redis.hmget(DROPPED_KEY, [lane, f"{lane}:last_at"])
        return int(count or 0), (float(last_at) if last_at else None)

    def oldest_age(self, lane: str | None = None) -> float | None:
        """Seconds since the oldest entry last failed (for a "DLQ not drained" alert); None when empty."""
        oldest: float | None = None
        for name in self._lanes(lane):
            first = self.redis.zrange(lane_key(name), 0, 0, withscores=True)
            if first:
                score = float(first[0][1])
                oldest = score if oldest is None else min(oldest, score)
        return None if oldest is None else max(0.0, time.time() - oldest)

    # --- replay coordination -----------------------------------------------------------------------------------

    def claim(self, entry_id: str, ttl_s: float = 60) -> bool:
        """SET NX: of two replayers racing for one entry, exactly one gets True."""
        return bool(self.redis.set(f"{CLAIM_PREFIX}:{entry_id}", "1", nx=True, px=int(ttl_s * 1000)))

    def release(self, entry_id: str) -> None:
        self.redis.delete(f"{CLAIM_PREFIX}:{entry_id}")

    @staticmethod
    def _lanes(lane: str | None) -> tuple[str, ...]:
        return (lane,) if lane else LANES


class AttemptLog:
    """The failed attempts of one task id so far, kept until it succeeds, is dead-lettered or the key expires."""

    def __init__(self, redis_client: redis.Redis, ttl_s: float) -> None:
        self.redis = redis_client
        self.ttl_s = ttl_s

    def record(self, task_id: str, attempt: Attempt) -> None:
        key = f"{ATTEMPTS_PREFIX}:{task_id}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, attempt.model_dump_json())
        pipe.ltrim(key, -MAX_HISTORY, -1)
        pipe.expire(key, int(self.ttl_s))
        pipe.execute()

    def forget(self, task_id: str) -> None:
        self.redis.delete(f"{ATTEMPTS_PREFIX}:{task_id}")

    def take(self, task_id: str) -> list[Attempt]:
        """The recorded attempts, oldest first, and forget them (they now live in the dead letter)."""
        key = f"{ATTEMPTS_PREFIX}:{task_id}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
        return [Attempt.model_validate_json(item) for item in raw or []]
