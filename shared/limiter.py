"""One rate limiter in Redis, shared by every worker process, with a reserve that only revocations may spend.

Why Redis and one Lua script: Celery's `rate_limit` is per worker process, so N workers would send N times the
allowed rate. A token bucket evaluated atomically in Redis (server `TIME`, so client clocks do not matter) is one
bucket for the whole fleet. Why the reserve: a leaver must lose Salesforce access within seconds even while a bulk
sync is saturating the API, so sync may only take tokens while the bucket holds more than the reserved share.
Why the "throttled until" key lives in the same script: when Graph says Retry-After, that applies to the whole
app+tenant, so every process and both lanes must hold off without first spending a request to find out.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis as redis_lib

from shared.dispatch import LANE_SYNC, LANES
from shared.errors import SERVICE_GRAPH, SERVICE_REDIS, SERVICE_SALESFORCE, RetryableError

#: While the sync lane is paused near Salesforce's daily limit, it is told to come back after this long.
SYNC_PAUSE_RECHECK_S = 300.0
#: How long a recorded Salesforce usage figure is trusted (the allowance is a rolling 24 h window).
SF_USAGE_TTL_S = 24 * 3600
#: A wait up to this long is slept through inside `admit`; longer waits go back to the caller (retry/park).
MAX_INLINE_WAIT_S = 2.0
#: `admit` gives up after sleeping this long in total, so a hot bucket cannot pin a worker indefinitely.
MAX_INLINE_TOTAL_S = 10.0

_PREFIX = "idsync:rl"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: bucket, throttled-until[, sf usage]. ARGV: rate, capacity, reserved, cost, is_sync, pause_share, pause_wait.
_ACQUIRE = (
    _NOW
    + """
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return string.format('%.6f', blocked - now) end
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local reserved = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local sync = ARGV[5] == '1'
local pause_share = tonumber(ARGV[6])
if sync and pause_share > 0 and #KEYS >= 3 then
  local usage = redis.call('GET', KEYS[3])
  if usage then
    local used, total = string.match(usage, '^(%d+)/(%d+)')
    used = tonumber(used)
    total = tonumber(total)
    if used and total and total > 0 and used / total >= pause_share then return ARGV[7] end
  end
end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate) end
local keep = 0
if sync then keep = math.min(reserved, cap - cost) end
if tokens - cost >= keep then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens - cost), 'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
  return '0'
end
return string.format('%.6f', (keep + cost - tokens) / rate)
"""
)

# KEYS: throttled-until. ARGV: seconds. Keeps the later of the existing and the new deadline.
_BLOCK = (
    _NOW
    + """
local secs = tonumber(ARGV[1])
local new = now + secs
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if new > cur then
  redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil(secs * 1000) + 1000)
  return string.format('%.6f', secs)
end
return string.format('%.6f', cur - now)
"""
)

# KEYS: throttled-until.
_REMAINING = (
    _NOW
    + """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > now then return string.format('%.6f', cur - now) end
return '0'
"""
)

P = ParamSpec("P")
T = TypeVar("T")


def _redis_errors_are_retryable(fn: Callable[P, T]) -> Callable[P, T]:
    """A Redis outage is a transient condition for the caller, reported in our own error vocabulary."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except redis_lib.RedisError as exc:
            raise RetryableError(f"limiter unavailable: {type(exc).__name__}", service=SERVICE_REDIS) from exc

    return wrapper


class Limiter:
    """Fleet-wide token buckets per (service, key), a shared throttle deadline, and Salesforce usage tracking."""

    def __init__(self, redis: redis_lib.Redis, settings: Any, *, burst_s: float = 1.0) -> None:
        """`burst_s`: how many seconds of traffic a full bucket holds (capacity = rate x burst_s, at least 1)."""
        if burst_s <= 0:
            raise ValueError("burst_s must be positive")
        self._redis = redis
        self._settings = settings
        self._burst_s = burst_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._block = redis.register_script(_BLOCK)
        self._remaining = redis.register_script(_REMAINING)

    # --- keys -------------------------------------------------------------------------------------------------
    @staticmethod
    def bucket_key(service: str, key: str) -> str:
        # The hash tag keeps a bucket and its deadline in one cluster slot, as one script touches both.
        return f"{_PREFIX}:{{{service}:{key}}}"

    def _until_key(self, service: str, key: str) -> str:
        return self.bucket_key(service, key) + ":until"

    @property
    def _usage_key(self) -> str:
        return self.bucket_key(SERVICE_SALESFORCE, "default") + ":usage"

    def _rate(self, service: str) -> float:
        if service == SERVICE_GRAPH:
            return float(self._settings.graph_requests_per_s)
        if service == SERVICE_SALESFORCE:
            return float(self._settings.sf_requests_per_s)
        raise ValueError(f"no rate configured for service {service!r}")

    # --- admission --------------------------------------------------------------------------------------------
    @_redis_errors_are_retryable
    def acquire(self, service: str, lane: str, key: str = "default", cost: int = 1) -> float:
        """0.0 if the call may go now (tokens taken), else seconds to wait (nothing taken).

        The sync lane of Salesforce also waits while the day's API usage
        is at or above `sf_sync_pause_share`; revocation is never paused by that.
        """
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        rate = self._rate(service)
        capacity = max(rate * self._burst_s, 1.0)
        if cost < 1 or cost > capacity:
            raise ValueError(f"cost {cost} outside 1..{capacity:g} for {service}")
        keys = [self.bucket_key(service, key), self._until_key(service, key)]
        if service == SERVICE_SALESFORCE:
            keys.append(self._usage_key)
        args = [
            rate,
            capacity,
            capacity * float(self._settings.revocation_reserved_share),
            cost,
            1 if lane == LANE_SYNC else 0,
            float(self._settings.sf_sync_pause_share) if service == SERVICE_SALESFORCE else 0,
            SYNC_PAUSE_RECHECK_S,
        ]
        return max(0.0, float(self._acquire(keys=keys, args=args)))

    def admit(
        self,
        service: str,
        lane: str,
        key: str = "default",
        cost: int = 1,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> float:
        """Acquire, sleeping through short waits; 0.0 once admitted, else the wait the caller must defer by.

        Short waits are cheaper to sleep than to re-queue; long ones must go back to Celery so the worker slot is
        free for revocations.
        """
        from shared import metrics

        slept = 0.0
        while True:
            wait = self.acquire(service, lane, key, cost)
            if wait <= 0.0:
                if slept:
                    metrics.LIMITER_WAIT.labels(service, lane).observe(slept)
                return 0.0
            if wait > MAX_INLINE_WAIT_S or slept + wait > MAX_INLINE_TOTAL_S:
                metrics.LIMITER_DEFERRED.labels(service, lane).inc()
                return wait
            sleep(wait)
            slept += wait

    # --- shared throttle deadline -----------------------------------------------------------------------------
    @_redis_errors_are_retryable
    def block_until(self, service: str, key: str, seconds: float) -> None:
        """Hold off both lanes of `service`/`key` for `seconds` from Redis' now; a later existing deadline wins."""
        if not math.isfinite(seconds) or seconds <= 0:
            return
        self._block(keys=[self._until_key(service, key)], args=[seconds])

    @_redis_errors_are_retryable
    def throttled_for(self, service: str, key: str = "default") -> float:
        return max(0.0, float(self._remaining(keys=[self._until_key(service, key)])))

    # --- Salesforce daily usage -------------------------------------------------------------------------------
    @_redis_errors_are_retryable
    def record_sf_usage(self, used: int, total: int) -> None:
        """Remember the latest `Sforce-Limit-Info: api-usage=used/total` seen by any process."""
        if used < 0 or total <= 0:
            return
        self._redis.set(self._usage_key, f"{int(used)}/{int(total)}", ex=SF_USAGE_TTL_S)

    @_redis_errors_are_retryable
    def sf_usage(self) -> tuple[int, int] | None:
        raw = self._redis.get(self._usage_key)
        if not raw:
            return None
        used, _, total = str(raw).partition("/")
        try:
            return int(used), int(total)
        except ValueError:
            return None

    def sync_paused(self) -> bool:
        """True while daily usage is at or above `sf_sync_pause_share`: the rest is kept for revocations."""
        usage = self.sf_usage()
        if usage is None or usage[1] <= 0:
            return False
        return usage[0] / usage[1] >= float(self._settings.sf_sync_pause_share)

    # --- operator view ----------------------------------------------------------------------------------------
    @_redis_errors_are_retryable
    def status(self) -> dict[str, Any]:
        """What `idsync status` shows: active throttle deadlines, Salesforce usage and whether sync is paused."""
        throttled: dict[str, dict[str, float]] = {SERVICE_GRAPH: {}, SERVICE_SALESFORCE: {}}
        for name in self._redis.scan_iter(match=f"{_PREFIX}:{{*}}:until", count=100):
            inner = str(name)[len(_PREFIX) + 2 : -len("}:until")]
            service, _, key = inner.partition(":")
            remaining = self.throttled_for(service, key)
            if remaining > 0:
                throttled.setdefault(service, {})[key] = round(remaining, 3)
        usage = self.sf_usage()
        return {
            "throttled_for_s": throttled,
            "sf_api_usage": None
            if usage is None
            else {"used": usage[0], "total": usage[1], "share": round(usage[0] / usage[1], 4) if usage[1] else None},
            "sync_paused": self.sync_paused(),
        }
