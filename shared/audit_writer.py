"""The single audit writer: chains the inbox into a tamper-evident log and delivers it to every configured sink.

Why one writer: a hash chain has one order, so exactly one process may extend it. A Redis lock (SET NX PX, renewed
every second) elects it; a second `idsync audit-writer` waits as a standby and takes over within the lock's TTL if
the first dies. Every write the writer makes is fenced by a Lua script that first checks it still holds the lock, so a
paused, deposed writer can never append a second branch.

Redis layout (all owned here; workers only XADD to the inbox, `shared.audit.STREAM_KEY`):
- `idsync:audit:chain`: chained entries, stream ids `<seq>-0`, field `entry` = canonical JSON (shared.audit_chain).
  Appending a batch, moving the inbox cursor and the head is one atomic script: a crash leaves no gap, no repeat.
- `idsync:audit:head`: hash {seq, hash, inbox_id, checkpoint_seq, checkpoint_at}.
- `idsync:audit:sink:<name>`: the last seq that sink has durably stored.

Each sink has its own thread, cursor and backoff: a sink that is down (or slow) delays only itself. A chain entry
leaves Redis only when every configured sink has it; the inbox keeps `IDSYNC_AUDIT_RECENT_KEEP` chained events for
`idsync status` and drops older chained ones. A sink outage grows Redis, never loses an event: watch
`idsync_audit_sink_backlog_entries`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis as redis_lib

from shared.audit import STREAM_KEY as INBOX_KEY
from shared.audit import event_from_fields
from shared.audit_chain import GENESIS_HASH, make_checkpoint, make_entry
from shared.audit_events import canonical_json
from shared.audit_sinks import AuditSink
from shared.logging import get_logger
from shared.redis_lock import RedisLock

CHAIN_KEY = "idsync:audit:chain"
HEAD_KEY = "idsync:audit:head"
LOCK_KEY = "idsync:audit:writer:lock"
SINK_PREFIX = "idsync:audit:sink:"
LOCK_TTL_MS = 15_000
RENEW_EVERY_S = 1.0
#: How long one blocking read waits for new entries; short, so a stop request is seen quickly.
BLOCK_MS = 500
#: After a partial batch, wait this long before the next one: under a steady trickle of events, fewer and larger
#: batches (one chain script, one fsync, one SQL commit per batch) cost the machine far less than one per event.
CHAIN_PAUSE_S = 0.25
DELIVERY_PAUSE_S = 0.5
TRIM_EVERY_S = 2.0
PENDING_CAP = 10_000

log = get_logger("idsync.audit.writer")

# KEYS: lock, chain, head. ARGV: token, expected head seq, new head seq, new head hash, inbox id, checkpoint seq,
# checkpoint at, then (seq, entry json) pairs. Returns the number appended, -1 without the lock, -2 on a stale head.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[3], 'seq') or '0')
if cur ~= tonumber(ARGV[2]) then return -2 end
local n = 0
for i = 8, #ARGV, 2 do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'entry', ARGV[i + 1])
  n = n + 1
end
redis.call('HSET', KEYS[3], 'seq', ARGV[3], 'hash', ARGV[4], 'inbox_id', ARGV[5], 'checkpoint_seq', ARGV[6],
           'checkpoint_at', ARGV[7])
return n
"""

# KEYS: lock, cursor. ARGV: token, seq. Moves a sink's cursor forward only.
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""



def sink_key(name: str) -> str:
    return SINK_PREFIX + name


def head(redis: Any) -> dict[str, Any]:
    raw = redis.hgetall(HEAD_KEY) or {}
    return {
        "seq": int(raw.get("seq") or 0),
        "hash": raw.get("hash") or GENESIS_HASH,
        "inbox_id": raw.get("inbox_id") or "0-0",
        "checkpoint_seq": int(raw.get("checkpoint_seq") or 0),
        "checkpoint_at": float(raw.get("checkpoint_at") or 0.0),
    }


def chain_range(redis: Any, after_seq: int, count: int) -> list[dict[str, Any]]:
    """Chained entries with seq > `after_seq`, oldest first."""
    return [json.loads(fields["entry"]) for _, fields in redis.xrange(CHAIN_KEY, min=f"({after_seq}-0", count=count)]


def backlog(redis: Any, sinks: Iterable[str], now: float | None = None) -> dict[str, Any]:
    """What `idsync status` and the metrics show: head, unchained inbox events, and per sink what it still lacks."""
    now = time.time() if now is None else now
    h = head(redis)
    pending = redis.xrange(INBOX_KEY, min=f"({h['inbox_id']}", count=PENDING_CAP + 1)
    oldest = (now - int(pending[0][0].split("-")[0]) / 1000.0) if pending else 0.0
    out: dict[str, Any] = {"head_seq": h["seq"], "inbox_pending": len(pending), "inbox_oldest_age_s": max(0.0, oldest),
                           "checkpoint_seq": h["checkpoint_seq"], "sinks": {}}
    for name in sinks:
        cursor = int(redis.get(sink_key(name)) or 0)
        lag = 0.0
        if cursor < h["seq"]:
            nxt = chain_range(redis, cursor, 1)
            lag = max(0.0, now - float(nxt[0]["chained_at"])) if nxt else 0.0
        out["sinks"][name] = {"delivered_seq": cursor, "backlog": max(0, h["seq"] - cursor), "lag_s": round(lag, 3)}
    return out


class AuditWriter:
    """Run with `run(stop)`; `step()` does one chaining pass (tests drive it directly)."""

    def __init__(
        self,
        redis: Any,
        sinks: dict[str, AuditSink],
        key: bytes,
        *,
        batch_size: int = 500,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        recent_keep: int = 100_000,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.sinks = sinks
        self.key = key
        self.batch_size = batch_size
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.recent_keep = recent_keep
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self._lock = RedisLock(redis, LOCK_KEY, LOCK_TTL_MS, token=uuid.uuid4().hex)
        self.token = self._lock.token  # the scripts below write only while the lock holds this token
        self.leading = threading.Event()
        self._append = redis.register_script(_APPEND)
        self._advance = redis.register_script(_ADVANCE)
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, redis: Any, settings: Any, sinks: dict[str, AuditSink], key: bytes) -> AuditWriter:
        return cls(redis, sinks, key, batch_size=settings.audit_batch_size,
                   checkpoint_every=settings.audit_checkpoint_every,
                   checkpoint_interval_s=settings.audit_checkpoint_interval_s,
                   recent_keep=settings.audit_recent_keep, backoff_max_s=settings.audit_sink_backoff_max_s)

    # ------------------------------------------------------------------------------------------------ the lock
    def acquire(self) -> bool:
        if self._lock.acquire():
            self.leading.set()
            log.info("audit_writer_leading")
            return True
        return False

    def renew(self) -> bool:
        if self._lock.renew():
            return True
        self.leading.clear()
        log.warning("audit_writer_lost_lock")
        return False

    def release(self) -> None:
        self.leading.clear()
        try:
            self._lock.release()
        except redis_lib.RedisError:
            pass

    # ------------------------------------------------------------------------------------------------ chaining
    def step(self, block_ms: int = 0) -> int:
        """Chain one batch from the inbox (and a checkpoint when due); returns how many entries were appended."""
        h = head(self.redis)
        if block_ms:
            got = self.redis.xread({INBOX_KEY: h["inbox_id"]}, count=self.batch_size, block=block_ms)
            batch = got[0][1] if got else []
        else:
            batch = self.redis.xrange(INBOX_KEY, min=f"({h['inbox_id']}", count=self.batch_size)
        now = self.clock()
        seq, prev = h["seq"], h["hash"]
        entries: list[dict[str, Any]] = []
        for stream_id, fields in batch:
            seq += 1
            entry = make_entry(seq, prev, now, event=event_from_fields(fields, stream_id))
            entries.append(entry)
            prev = entry["hash"]
        since_checkpoint = seq - h["checkpoint_seq"]
        cp_seq, cp_at = h["checkpoint_seq"], h["checkpoint_at"]
        due = since_checkpoint >= self.checkpoint_every or (
            since_checkpoint > 0 and now - h["checkpoint_at"] >= self.checkpoint_interval_s)
        if due:
            seq += 1
            checkpoint = make_entry(seq, prev, now, checkpoint=make_checkpoint(self.key, seq - 1, prev, now))
            entries.append(checkpoint)
            prev, cp_seq, cp_at = checkpoint["hash"], seq, now
        if not entries:
            return 0
        inbox_id = batch[-1][0] if batch else h["inbox_id"]
        args: list[Any] = [self.token, h["seq"], seq, prev, inbox_id, cp_seq, repr(cp_at)]
        for entry in entries:
            args.extend([entry["seq"], canonical_json(entry)])
        result = int(self._append(keys=[LOCK_KEY, CHAIN_KEY, HEAD_KEY], args=args))
        if result == -1:
            self.leading.clear()
            raise LostLock("the audit writer lock was lost; another writer leads")
        if result == -2:
            raise LostLock("the chain head moved under this writer; another writer leads")
        self._count(entries)
        return len(entries)

    @staticmethod
    def _count(entries: list[dict[str, Any]]) -> None:
        from shared import metrics

        for entry in entries:
            metrics.AUDIT_CHAINED.labels(entry["type"]).inc()

    def trim(self) -> None:
        """Drop chain entries every configured sink has; drop chained inbox events beyond the `recent_keep` newest."""
        cursors = [int(self.redis.get(sink_key(name)) or 0) for name in self.sinks]
        low = min(cursors) if cursors else head(self.redis)["seq"]
        if low > 0:
            self.redis.xtrim(CHAIN_KEY, minid=f"{low + 1}-0", approximate=False)
        excess = int(self.redis.xlen(INBOX_KEY)) - self.recent_keep
        if excess <= 0:
            return
        chained_upto = head(self.redis)["inbox_id"]
        oldest = self.redis.xrange(INBOX_KEY, count=excess)
        if not oldest:
            return
        boundary = oldest[-1][0]
        # Only chained events may go: never trim past the chain's position in the inbox.
        upto = boundary if _id_le(boundary, chained_upto) else chained_upto
        if upto != "0-0":
            self.redis.xtrim(INBOX_KEY, minid=_next_id(upto), approximate=False)

    # ------------------------------------------------------------------------------------------------ delivery
    def deliver_once(self, name: str) -> int:
        """Deliver the next batch to one sink; returns how many entries it received (0: nothing new)."""
        sink = self.sinks[name]
        cursor = int(self.redis.get(sink_key(name)) or 0)
        entries = chain_range(self.redis, cursor, self.batch_size)
        if not entries:
            return 0
        if cursor and entries[0]["seq"] != cursor + 1:
            log.error("audit_sink_gap", sink=name, delivered_seq=cursor, next_seq=entries[0]["seq"])
        sink.deliver(entries)
        if int(self._advance(keys=[LOCK_KEY, sink_key(name)], args=[self.token, entries[-1]["seq"]])) == -1:
            self.leading.clear()
            raise LostLock("the audit writer lock was lost during delivery")
        from shared import metrics

        metrics.AUDIT_DELIVERED.labels(name).inc(len(entries))
        return len(entries)

    def _sink_loop(self, name: str, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            if not self.leading.is_set():
                stop.wait(0.2)
                continue
            try:
                delivered = self.deliver_once(name)
            except LostLock:
                continue
            except Exception as err:  # noqa: BLE001 - a sink failure is retried with backoff, whatever it is
                failures += 1
                delay = min(self.backoff_max_s, 0.5 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                log.warning("audit_sink_failed", sink=name, error=type(err).__name__, detail=str(err)[:300],
                            failures=failures, retry_in_s=round(delay, 2))
                from shared import metrics

                metrics.AUDIT_SINK_FAILURES.labels(name).inc()
                self._close_quietly(name)
                stop.wait(delay)
                continue
            if failures:
                log.info("audit_sink_recovered", sink=name, after_failures=failures)
                failures = 0
            if delivered < self.batch_size:
                stop.wait(DELIVERY_PAUSE_S if delivered else CHAIN_PAUSE_S)

    def _close_quietly(self, name: str) -> None:
        try:
            self.sinks[name].close()
        except Exception:  # noqa: BLE001 - reconnect on the next attempt anyway
            pass

    # ------------------------------------------------------------------------------------------------ main loop
    def run(self, stop: threading.Event) -> None:
        """Lead (or wait as a standby), chain, deliver and trim until `stop` is set; Redis errors are retried."""
        for name in self.sinks:
            thread = threading.Thread(target=self._sink_loop, args=(name, stop), name=f"audit-sink-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        last_renew = last_trim = 0.0
        while not stop.is_set():
            try:
                if not self.leading.is_set():
                    if not self.acquire():
                        stop.wait(RENEW_EVERY_S)
                        continue
                    last_renew = time.monotonic()
                if time.monotonic() - last_renew >= RENEW_EVERY_S:
                    if not self.renew():
                        continue
                    last_renew = time.monotonic()
                chained = self.step(block_ms=BLOCK_MS)
                if time.monotonic() - last_trim >= TRIM_EVERY_S:
                    self.trim()
                    last_trim = time.monotonic()
                if chained < self.batch_size:
                    stop.wait(CHAIN_PAUSE_S)
            except LostLock as err:
                log.warning("audit_writer_standby", reason=str(err))
                self.leading.clear()
            except redis_lib.RedisError as err:
                log.warning("audit_writer_redis_error", error=type(err).__name__, detail=str(err)[:200])
                stop.wait(1.0)
        for thread in self._threads:
            thread.join(timeout=10)
        if self.leading.is_set():
            try:
                self.trim()  # leave Redis holding only what some sink still lacks
            except redis_lib.RedisError:
                pass
        self.release()
        for name in self.sinks:
            self._close_quietly(name)


class LostLock(Exception):
    """Another writer leads; this one becomes a standby."""


def _parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _id_le(a: str, b: str) -> bool:
    return _parse_id(a) <= _parse_id(b)


def _next_id(stream_id: str) -> str:
    ms, seq = _parse_id(stream_id)
    return f"{ms}-{seq + 1}"
