"""The one Redis lock every mutual exclusion in idsync is built from.

Why one: the delta poller's lease, the audit writer's election, the reconciliation run, a leaver's record transfer,
a guest domain's Account, a Salesforce request and the subscription manager each need "one holder at a time, gone on
its own if the holder dies". They differ in policy (fail fast, wait a little, renew from a thread, take over a dead
holder, let a redelivered task re-enter), not in mechanism; the mechanism lives here once.

The mechanism: `SET key token NX PX ttl` takes the lock; the token names the holder. Renewing, releasing and taking
over compare the token inside one Lua script, so they are atomic: a holder whose lock expired and was taken by
someone else can never extend or delete the new holder's lock (a GET followed by a DEL could, between the two).
This is the single-instance pattern of the Redis `SET` documentation (https://redis.io/docs/latest/commands/set/,
"Patterns"); idsync runs against one Redis (or a replicated pair), so Redlock's multi-master quorum does not apply.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shared.errors import SERVICE_REDIS, RetryableError
from shared.redis_values import as_text_or_none

# KEYS: lock. ARGV: token, ttl ms. Takes a free lock; a token that holds it already takes it again (and renews it).
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock. ARGV: token, ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock. ARGV: the holder to replace, token, ttl ms.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class LockBusy(RetryableError):
    """Another holder kept the lock for longer than this caller could wait; the work is retried later."""

    def __init__(self, key: str, holder: str | None, retry_after: float) -> None:
        super().__init__(f"{key} is held by {holder or 'another process'}", service=SERVICE_REDIS, code="lock_busy",
                         retry_after=retry_after)
        self.key = key
        self.holder = holder


def holder_token() -> str:
    """host:pid:nonce, so a log line (or `idsync status`) can say who holds a lock, and a process on the same host can
    tell that the holder no longer exists."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisLock:
    """One lock key held under one token. Works with clients built with or without `decode_responses`."""

    def __init__(self, redis: Any, key: str, ttl_ms: int, token: str | None = None) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = int(ttl_ms)
        self.token = token or holder_token()

    def acquire(self) -> bool:
        """Take the lock if it is free or already ours (then its TTL starts again); never waits."""
        return int(self.redis.eval(_TAKE, 1, self.key, self.token, self.ttl_ms)) == 1

    def acquire_within(self, wait_s: float, *, poll_s: float = 0.05,
                       sleep: Callable[[float], None] = time.sleep) -> bool:
        """Take the lock, polling for up to `wait_s` seconds while another holder has it."""
        deadline = time.monotonic() + wait_s
        while not self.acquire():
            if time.monotonic() >= deadline:
                return False
            sleep(poll_s)
        return True

    def renew(self) -> bool:
        """Start the TTL again; False when the lock is no longer ours (it expired, and perhaps was taken)."""
        return int(self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)) == 1

    def release(self) -> bool:
        """Give the lock up; False (and nothing deleted) when it is no longer ours."""
        return int(self.redis.eval(_RELEASE, 1, self.key, self.token)) == 1

    def take_over(self, previous: str) -> bool:
        """Replace `previous` as holder (a holder known to be dead); False if the lock changed hands meanwhile."""
        return int(self.redis.eval(_TAKE_OVER, 1, self.key, previous, self.token, self.ttl_ms)) == 1

    def holder(self) -> str | None:
        return as_text_or_none(self.redis.get(self.key))

    def remaining_s(self) -> float:
        """How long the current holder's lock may still last (0 when there is none)."""
        remaining = int(self.redis.pttl(self.key))
        return max(0.0, remaining / 1000.0)

    @contextmanager
    def held(self, wait_s: float = 0.0, *, sleep: Callable[[float], None] = time.sleep) -> Iterator[RedisLock]:
        """Hold the lock for a block; raises LockBusy (retryable) when it stays taken for `wait_s` seconds."""
        if not self.acquire_within(wait_s, sleep=sleep):
            raise LockBusy(self.key, self.holder(), retry_after=max(1.0, min(self.remaining_s(), 60.0)))
        try:
            yield self
        finally:
            self.release()


def holder_is_dead_here(holder: str) -> bool:
    """True when `holder` (a `holder_token`) names a process on this host that no longer exists, so its lock can be
    taken over at once instead of after its TTL. A holder on another host is never judged: its pid means nothing
    here."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid_text))


def _zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet (common in containers) still answers `kill(pid, 0)`."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False
