"""A reconciliation run's state: one run at a time (a Redis lock), and what the run did so far, kept so a run cut
short (worker killed, time limit, Ctrl-C) resumes where it stopped instead of starting again.

What is kept, per run (`idsync:reconcile:{run_id}:*`, kept `KEEP_S` after the run ends):
- `meta`: run id, status, scope, phase, times, the chunk cursor (chunks and users done), the guard's decision;
- `counts`: users per plan action (`create`, `update`, `deprovision`, `review`, `unchanged`, `ignored`, ...);
- `recorded`: users whose plan is in the report already; `done`: users whose chunk was applied completely;
- `changes`, `reviews`, `deprovisions`, `failures`, `salesforce_only`: the report's rows (JSON, one per entry).
A resumed run skips `done` users entirely and never records a user twice: the one chunk that was being applied when
the run stopped is planned again from what Salesforce holds now (so what was already written is a no-op) and its
remaining writes are made.

A dry run keeps the same state in memory only: it writes nothing anywhere.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from shared.redis_lock import RedisLock, holder_is_dead_here
from shared.redis_values import as_text_or_none

PREFIX = "idsync:reconcile"
CURRENT_KEY = f"{PREFIX}:current"  # the run id of the run in progress (or cut short)
LAST_KEY = f"{PREFIX}:last"  # the run id of the last finished run
RUNS_KEY = f"{PREFIX}:runs"  # zset: run id -> start time (status lists the recent ones)
LOCK_KEY = f"{PREFIX}:lock"
#: A lock not refreshed for this long belongs to a dead process (refreshed at every page and chunk).
LOCK_TTL_S = 60
#: A finished run's state (and report rows) is kept this long for `idsync status` and later reports.
KEEP_S = 7 * 24 * 3600
ROW_LISTS = ("changes", "reviews", "deprovisions", "failures", "salesforce_only")
COUNT_KEYS = ("create", "update", "deprovision", "review", "unchanged")


class RunInProgress(Exception):  # noqa: N818 - an answer, not a bug
    """Another process holds the reconciliation lock."""


class RunLockLost(Exception):  # noqa: N818 - a state, reported as such
    """This run's lock ran out while it worked; it stopped, resumable, so two runs never write side by side."""


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"rec-{stamp}-{uuid.uuid4().hex[:6]}"


class RunLock:
    """The reconciliation lock, refreshed while the run works. Its token names the holder (host, pid), so a process
    on the same host may take over at once from a holder that no longer exists (a killed worker), instead of waiting
    for the TTL."""

    def __init__(self, redis: Any, ttl_s: int = LOCK_TTL_S) -> None:
        self._lock = RedisLock(redis, LOCK_KEY, ttl_s * 1000)
        self.value = self._lock.token
        self.held = False

    def acquire(self) -> None:
        holder = self._lock.holder()
        if self._lock.acquire() or (holder and holder_is_dead_here(holder) and self._lock.take_over(holder)):
            self.held = True
            return
        raise RunInProgress(f"a reconciliation is running ({self._lock.holder() or 'lock just released'}); "
                            "one run at a time")

    def refresh(self) -> None:
        """Start the lock's TTL again; a run whose lock ran out (a call blocked past the TTL) stops here, resumable,
        rather than go on beside a second run that may have taken the lock."""
        if self.held and not self._lock.renew():
            self.held = False
            raise RunLockLost("this reconciliation lost its lock (nothing refreshed it for "
                                f"{self._lock.ttl_ms // 1000} s) and stopped; `idsync reconcile` resumes it")

    def release(self) -> None:
        if self.held:
            self._lock.release()
        self.held = False


def run_in_progress(redis: Any) -> bool:
    """True while a live process holds the lock (a holder that died on this host does not count)."""
    holder = as_text_or_none(redis.get(LOCK_KEY))
    return bool(holder) and not holder_is_dead_here(str(holder))


class RunLog:
    """The state of one run, in memory (a dry run). `RedisRunLog` keeps the same in Redis."""

    def __init__(self, run_id: str, *, dry_run: bool, scope: list[str] | None = None,
                 started_at: float | None = None) -> None:
        self.run_id = run_id
        self.dry_run = dry_run
        self.scope = list(scope or [])
        self.started_at = time.time() if started_at is None else started_at
        self.resumed = False
        self._meta: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self._recorded: set[str] = set()
        self._done: set[str] = set()
        self._rows: dict[str, list[str]] = {name: [] for name in ROW_LISTS}

    # --- what was done
    def done_of(self, entra_ids: list[str]) -> set[str]:
        return {e for e in entra_ids if e in self._done}

    def recorded_of(self, entra_ids: list[str]) -> set[str]:
        return {e for e in entra_ids if e in self._recorded}

    def record(self, entra_id: str, action: str, rows: dict[str, list[dict[str, Any]]]) -> None:
        """A user's plan goes into the report (once per run, even across a resume)."""
        self.record_many([(entra_id, action, rows)])

    def record_many(self, entries: list[tuple[str, str, dict[str, list[dict[str, Any]]]]]) -> None:
        for entra_id, action, rows in entries:
            self._recorded.add(entra_id)
            self._counts[action] = self._counts.get(action, 0) + 1
            for name, items in rows.items():
                self._rows[name].extend(json.dumps(item, default=str) for item in items)

    def add_rows(self, name: str, items: Iterable[dict[str, Any]]) -> None:
        self._rows[name].extend(json.dumps(item, default=str) for item in items)

    def count(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n

    def mark_done(self, entra_ids: list[str]) -> None:
        """Users with nothing to write: done as soon as their plan is recorded."""
        self._done.update(entra_ids)
        self._meta["users_done"] = int(self._meta.get("users_done", 0)) + len(entra_ids)

    def chunk_done(self, entra_ids: list[str]) -> None:
        """A chunk of users was written."""
        self._done.update(entra_ids)
        self._meta["chunks_done"] = int(self._meta.get("chunks_done", 0)) + 1
        self._meta["users_done"] = int(self._meta.get("users_done", 0)) + len(entra_ids)

    def set(self, **fields: Any) -> None:
        self._meta.update(fields)

    def get(self, name: str, default: Any = None) -> Any:
        return self._meta.get(name, default)

    def finish(self, status: str = "done") -> None:
        self._meta.update(status=status, finished_at=time.time())

    # --- reading it back (reports)
    def counts(self) -> dict[str, int]:
        out = {key: 0 for key in COUNT_KEYS}
        out.update(self._counts)
        return out

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        for raw in self._rows[name]:
            yield json.loads(raw)

    def row_count(self, name: str) -> int:
        return len(self._rows[name])

    def meta(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dry_run": self.dry_run, "scope": self.scope, "started_at": self.started_at,
                **self._meta}


class RedisRunLog(RunLog):
    """A run's state in Redis (client with `decode_responses=True`)."""

    def __init__(self, redis: Any, run_id: str, *, scope: list[str] | None = None,
                 started_at: float | None = None) -> None:
        super().__init__(run_id, dry_run=False, scope=scope, started_at=started_at)
        self.redis = redis

    def key(self, part: str) -> str:
        return f"{PREFIX}:{self.run_id}:{part}"

    @classmethod
    def start(cls, redis: Any, scope: list[str] | None = None) -> RedisRunLog:
        log = cls(redis, new_run_id(), scope=scope)
        pipe = redis.pipeline(transaction=True)
        pipe.hset(log.key("meta"), mapping={"run_id": log.run_id, "status": "running", "scope": json.dumps(log.scope),
                                            "started_at": repr(log.started_at), "phase": "starting",
                                            "chunks_done": 0, "users_done": 0})
        pipe.set(CURRENT_KEY, log.run_id)
        pipe.zadd(RUNS_KEY, {log.run_id: log.started_at})
        pipe.execute()
        return log

    @classmethod
    def unfinished(cls, redis: Any) -> RedisRunLog | None:
        """The run cut short (or still running elsewhere), if any."""
        run_id = redis.get(CURRENT_KEY)
        if not run_id:
            return None
        meta = redis.hgetall(f"{PREFIX}:{run_id}:meta")
        if not meta or meta.get("status") != "running":
            redis.delete(CURRENT_KEY)
            return None
        log = cls(redis, str(run_id), scope=json.loads(meta.get("scope") or "[]"),
                  started_at=float(meta.get("started_at") or time.time()))
        log.resumed = True
        return log

    @classmethod
    def load(cls, redis: Any, run_id: str) -> RedisRunLog | None:
        meta = redis.hgetall(f"{PREFIX}:{run_id}:meta")
        if not meta:
            return None
        return cls(redis, run_id, scope=json.loads(meta.get("scope") or "[]"),
                   started_at=float(meta.get("started_at") or 0.0))

    def done_of(self, entra_ids: list[str]) -> set[str]:
        if not entra_ids:
            return set()
        flags = self.redis.smismember(self.key("done"), entra_ids)
        return {e for e, flag in zip(entra_ids, flags, strict=True) if flag}

    def recorded_of(self, entra_ids: list[str]) -> set[str]:
        if not entra_ids:
            return set()
        flags = self.redis.smismember(self.key("recorded"), entra_ids)
        return {e for e, flag in zip(entra_ids, flags, strict=True) if flag}

    def record_many(self, entries: list[tuple[str, str, dict[str, list[dict[str, Any]]]]]) -> None:
        """A chunk's plans, in one transaction: counted and listed together, or not at all."""
        if not entries:
            return
        actions: dict[str, int] = {}
        rows: dict[str, list[str]] = {}
        for _entra_id, action, user_rows in entries:
            actions[action] = actions.get(action, 0) + 1
            for name, items in user_rows.items():
                rows.setdefault(name, []).extend(json.dumps(item, default=str) for item in items)
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.key("recorded"), *(e for e, _a, _r in entries))
        for action, n in actions.items():
            pipe.hincrby(self.key("counts"), action, n)
        for name, encoded in rows.items():
            if encoded:
                pipe.rpush(self.key(name), *encoded)
        pipe.execute()

    def mark_done(self, entra_ids: list[str]) -> None:
        if not entra_ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.key("done"), *entra_ids)
        pipe.hincrby(self.key("meta"), "users_done", len(entra_ids))
        pipe.execute()

    def add_rows(self, name: str, items: Iterable[dict[str, Any]]) -> None:
        encoded = [json.dumps(item, default=str) for item in items]
        for start in range(0, len(encoded), 1000):
            self.redis.rpush(self.key(name), *encoded[start : start + 1000])

    def count(self, key: str, n: int = 1) -> None:
        self.redis.hincrby(self.key("counts"), key, n)

    def chunk_done(self, entra_ids: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        if entra_ids:
            pipe.sadd(self.key("done"), *entra_ids)
        pipe.hincrby(self.key("meta"), "chunks_done", 1)
        pipe.hincrby(self.key("meta"), "users_done", len(entra_ids))
        pipe.execute()

    def set(self, **fields: Any) -> None:
        self.redis.hset(self.key("meta"), mapping={k: json.dumps(v) if isinstance(v, dict | list) else
                                                   ("" if v is None else v) for k, v in fields.items()})

    def get(self, name: str, default: Any = None) -> Any:
        value = self.redis.hget(self.key("meta"), name)
        return default if value in (None, "") else value

    def finish(self, status: str = "done") -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key("meta"), mapping={"status": status, "finished_at": repr(time.time())})
        for part in ("meta", "counts", "recorded", "done", *ROW_LISTS):
            pipe.expire(self.key(part), KEEP_S)
        pipe.set(LAST_KEY, self.run_id)
        pipe.delete(CURRENT_KEY)
        pipe.execute()

    def discard(self) -> None:
        """Forget an unfinished run (`idsync reconcile --restart`)."""
        self.finish("discarded")

    def counts(self) -> dict[str, int]:
        out = {key: 0 for key in COUNT_KEYS}
        out.update({k: int(v) for k, v in self.redis.hgetall(self.key("counts")).items()})
        return out

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        start = 0
        while True:
            batch = self.redis.lrange(self.key(name), start, start + 4999)
            for raw in batch:
                yield json.loads(raw)
            if len(batch) < 5000:
                return
            start += 5000

    def row_count(self, name: str) -> int:
        return int(self.redis.llen(self.key(name)))

    def meta(self) -> dict[str, Any]:
        raw = self.redis.hgetall(self.key("meta"))
        out: dict[str, Any] = {"run_id": self.run_id, "dry_run": False, "scope": self.scope,
                               "started_at": self.started_at}
        for key, value in raw.items():
            if key in ("scope", "guard"):
                out[key] = json.loads(value) if value else None
            elif key in ("chunks_done", "users_done"):
                out[key] = int(value)
            elif key in ("started_at", "finished_at"):
                out[key] = float(value)
            else:
                out[key] = value
        return out


def recent_runs(redis: Any, limit: int = 5) -> list[dict[str, Any]]:
    """The latest runs' meta and counts, newest first (for `idsync status`)."""
    out: list[dict[str, Any]] = []
    for run_id in redis.zrevrange(RUNS_KEY, 0, limit - 1):
        log = RedisRunLog.load(redis, str(run_id))
        if log is None:
            redis.zrem(RUNS_KEY, run_id)
            continue
        out.append({**log.meta(), "counts": log.counts()})
    return out
