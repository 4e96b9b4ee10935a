"""The fleet-wide limiter: one bucket for all processes, a reserve only revocations may spend, a shared throttle.

Time is never waited for, and never passes unnoticed: the limiter reads Redis's own clock (TIME), which the fakeredis
tests freeze, and refill is simulated by moving the bucket's stored timestamp back. So exact token counts hold on a
loaded machine. Atomicity and sharing run against a real redis-server, whose clock does run: those tests use rates
so low that no token can refill while they run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ops.embedded_redis import EmbeddedRedis, free_port
from shared.errors import RetryableError
from shared.limiter import SYNC_PAUSE_RECHECK_S, Limiter
from shared.redis_conn import get_redis
from shared.settings import Settings, load_settings


def _settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "graph_requests_per_s": 10.0,
        "sf_requests_per_s": 10.0,
        "revocation_reserved_share": 0.3,
    }
    base.update(overrides)
    return load_settings(_env_file=None, **base)


#: Where fakeredis reads the clock its TIME command (and so the limiter's Lua scripts) answers with.
FROZEN_AT = 1_900_000_000.0


class _FrozenTime:
    """Stands in for the `time` module inside fakeredis's server commands: TIME answers a fixed instant."""

    now = FROZEN_AT

    @classmethod
    def time(cls) -> float:
        return cls.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """A fakeredis whose TIME is frozen: however slowly the test runs, no token refills behind its back."""
    from fakeredis.commands_mixins import server_mixin

    monkeypatch.setattr(server_mixin, "time", _FrozenTime)
    client = fakeredis.FakeRedis(decode_responses=True)
    # If fakeredis ever reads its clock elsewhere, say so instead of letting the counts drift into flakiness.
    assert client.eval("return redis.call('TIME')[1]", 0) == str(int(FROZEN_AT)), "fakeredis TIME is not frozen"
    return client


def _rewind(r: redis.Redis, service: str, key: str, seconds: float) -> None:
    """Pretend `seconds` passed since the bucket was last touched."""
    bucket = Limiter.bucket_key(service, key)
    ts = r.hget(bucket, "ts")
    assert ts is not None
    r.hset(bucket, "ts", float(ts) - seconds)


def _drain(limiter: Limiter, service: str, lane: str, key: str = "default") -> int:
    taken = 0
    while limiter.acquire(service, lane, key) == 0.0:
        taken += 1
        assert taken < 10_000
    return taken


# --- token bucket ------------------------------------------------------------------------------------------------
def test_a_full_bucket_admits_one_second_of_traffic_then_answers_how_long_to_wait(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    assert _drain(limiter, "graph", "revocation", "tenant-a") == 10
    wait = limiter.acquire("graph", "revocation", "tenant-a")
    assert 0.0 < wait <= 0.1 + 1e-6


def test_a_refused_acquire_consumes_nothing(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    _drain(limiter, "graph", "revocation", "t")
    before = fake.hgetall(Limiter.bucket_key("graph", "t"))
    for _ in range(5):
        assert limiter.acquire("graph", "revocation", "t") > 0
    assert fake.hgetall(Limiter.bucket_key("graph", "t")) == before


def test_sync_stops_at_the_reserved_share_and_revocation_can_still_take_the_reserve(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())  # capacity 10, reserve 3
    assert _drain(limiter, "salesforce", "sync") == 7
    sync_wait = limiter.acquire("salesforce", "sync")
    assert sync_wait > 0
    assert _drain(limiter, "salesforce", "revocation") == 3
    assert limiter.acquire("salesforce", "sync") > sync_wait  # sync must now wait for the reserve to refill too


def test_tokens_refill_at_the_configured_rate_up_to_capacity(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings(graph_requests_per_s=10.0))
    _drain(limiter, "graph", "revocation", "t")
    _rewind(fake, "graph", "t", 0.5)
    assert _drain(limiter, "graph", "revocation", "t") == 5
    _rewind(fake, "graph", "t", 3600)
    assert _drain(limiter, "graph", "revocation", "t") == 10


def test_buckets_are_separate_per_service_and_per_tenant_key(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    _drain(limiter, "graph", "revocation", "tenant-a")
    assert limiter.acquire("graph", "revocation", "tenant-b") == 0.0
    assert limiter.acquire("salesforce", "revocation") == 0.0


def test_each_service_uses_its_own_configured_rate(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings(graph_requests_per_s=4.0, sf_requests_per_s=6.0, revocation_reserved_share=0.0))
    assert _drain(limiter, "graph", "sync", "t") == 4
    assert _drain(limiter, "salesforce", "sync") == 6


def test_a_costly_call_takes_several_tokens(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    assert limiter.acquire("graph", "revocation", "t", cost=4) == 0.0
    assert _drain(limiter, "graph", "revocation", "t") == 6


def test_nonsense_arguments_are_refused(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    with pytest.raises(ValueError, match="lane"):
        limiter.acquire("graph", "bulk", "t")
    with pytest.raises(ValueError, match="service"):
        limiter.acquire("jira", "sync")
    with pytest.raises(ValueError, match="cost"):
        limiter.acquire("graph", "sync", "t", cost=11)


# --- shared throttle deadline ------------------------------------------------------------------------------------
def test_block_until_holds_off_both_lanes_of_that_tenant_only(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    limiter.block_until("graph", "tenant-a", 30)
    for lane in ("revocation", "sync"):
        wait = limiter.acquire("graph", lane, "tenant-a")
        assert 29 < wait <= 30
    assert limiter.acquire("graph", "revocation", "tenant-b") == 0.0
    assert 29 < limiter.throttled_for("graph", "tenant-a") <= 30
    assert limiter.throttled_for("graph", "tenant-b") == 0.0


def test_block_until_keeps_the_later_deadline(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    limiter.block_until("graph", "t", 60)
    limiter.block_until("graph", "t", 5)
    assert limiter.throttled_for("graph", "t") > 55
    limiter.block_until("graph", "t", 120)
    assert limiter.throttled_for("graph", "t") > 115


def test_a_blocked_acquire_consumes_no_tokens(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    limiter.block_until("graph", "t", 10)
    for _ in range(20):
        assert limiter.acquire("graph", "revocation", "t") > 0
    fake.delete(Limiter.bucket_key("graph", "t") + ":until")
    assert _drain(limiter, "graph", "revocation", "t") == 10


# --- Salesforce daily usage --------------------------------------------------------------------------------------
def test_sf_usage_is_shared_and_pauses_sync_at_the_configured_share_but_never_revocation(
    fake: fakeredis.FakeRedis,
) -> None:
    writer, reader = Limiter(fake, _settings()), Limiter(fake, _settings(sf_sync_pause_share=0.9))
    assert reader.sf_usage() is None and reader.sync_paused() is False
    writer.record_sf_usage(899, 1000)
    assert reader.sf_usage() == (899, 1000)
    assert reader.sync_paused() is False
    assert reader.acquire("salesforce", "sync") == 0.0
    writer.record_sf_usage(900, 1000)
    assert reader.sync_paused() is True
    assert reader.acquire("salesforce", "sync") == SYNC_PAUSE_RECHECK_S
    assert reader.acquire("salesforce", "revocation") == 0.0
    assert reader.acquire("graph", "sync", "t") == 0.0  # Graph is not affected by Salesforce's allowance


def test_status_reports_throttles_usage_and_pause_for_the_operator(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    limiter.block_until("graph", "tenant-a", 30)
    limiter.record_sf_usage(950, 1000)
    status = limiter.status()
    assert set(status["throttled_for_s"]) == {"graph", "salesforce"}
    assert 29 < status["throttled_for_s"]["graph"]["tenant-a"] <= 30
    assert status["throttled_for_s"]["salesforce"] == {}
    assert status["sf_api_usage"] == {"used": 950, "total": 1000, "share": 0.95}
    assert status["sync_paused"] is True


# --- admit: sleep through short waits, hand back long ones -------------------------------------------------------
def _clock_sleeper(r: redis.Redis, service: str, key: str, slept: list[float]) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        slept.append(seconds)
        _rewind(r, service, key, seconds)

    return sleep


def test_admit_sleeps_through_a_short_wait_and_then_proceeds(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    _drain(limiter, "graph", "revocation", "t")
    slept: list[float] = []
    assert limiter.admit("graph", "revocation", "t", sleep=_clock_sleeper(fake, "graph", "t", slept)) == 0.0
    assert len(slept) == 1 and 0 < slept[0] <= 0.1 + 1e-6


def test_admit_returns_a_long_wait_without_sleeping(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings())
    limiter.block_until("graph", "t", 30)
    slept: list[float] = []
    assert limiter.admit("graph", "sync", "t", sleep=slept.append) > 29
    assert slept == []


def test_admit_gives_up_after_sleeping_its_total_budget(fake: fakeredis.FakeRedis) -> None:
    limiter = Limiter(fake, _settings(graph_requests_per_s=1.0))
    _drain(limiter, "graph", "revocation", "t")
    slept: list[float] = []  # the sleeper never lets time pass: the bucket stays empty
    assert limiter.admit("graph", "revocation", "t", sleep=slept.append) > 0
    assert 0 < sum(slept) <= 10


# --- failure of Redis itself -------------------------------------------------------------------------------------
def test_an_unreachable_redis_surfaces_as_a_retryable_redis_error() -> None:
    dead = redis.Redis(port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
    limiter = Limiter(dead, _settings())
    with pytest.raises(RetryableError) as caught:
        limiter.acquire("graph", "sync", "t")
    assert caught.value.service == "redis"
    with pytest.raises(RetryableError):
        limiter.block_until("graph", "t", 5)


# --- real redis-server: one bucket across processes, atomically --------------------------------------------------
def test_two_limiters_on_separate_connections_share_one_bucket_and_deadline(redis_server: EmbeddedRedis) -> None:
    # Capacity 10 (reserve 3) refilling at 0.01 token/s: no token comes back while the test runs, however slowly.
    settings = _settings(graph_requests_per_s=0.01)
    a = Limiter(redis.Redis.from_url(redis_server.url, decode_responses=True), settings, burst_s=1000)
    b = Limiter(redis.Redis.from_url(redis_server.url, decode_responses=True), settings, burst_s=1000)
    assert _drain(a, "graph", "sync", "t") == 7
    assert b.acquire("graph", "sync", "t") > 0
    assert _drain(b, "graph", "revocation", "t") == 3
    a.block_until("graph", "t", 60)
    assert 30 < b.acquire("graph", "revocation", "t") <= 60  # the deadline a set, not a fresh bucket's answer
    a.record_sf_usage(10, 100)
    assert b.sf_usage() == (10, 100)


@pytest.mark.parametrize(("lane", "admitted"), [("revocation", 20), ("sync", 14)])
def test_concurrent_acquires_from_many_clients_never_overspend_the_bucket(
    redis_server: EmbeddedRedis, lane: str, admitted: int
) -> None:
    # 0.01 tokens/s with a 2000 s burst: capacity 20 and no measurable refill while the test runs.
    settings = _settings(graph_requests_per_s=0.01)
    results: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        limiter = Limiter(redis.Redis.from_url(redis_server.url, decode_responses=True), settings, burst_s=2000)
        mine = [limiter.acquire("graph", lane, "t") for _ in range(10)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert results.count(0.0) == admitted


# --- shared.redis_conn -------------------------------------------------------------------------------------------
def test_get_redis_returns_one_decoding_client_per_url(redis_server: EmbeddedRedis) -> None:
    first = get_redis(redis_server.url)
    assert get_redis(redis_server.url) is first
    assert get_redis(redis_server.url.replace("/0", "/1")) is not first
    first.set("k", "v")
    assert first.get("k") == "v"  # str, not bytes


def test_get_redis_builds_a_new_client_in_a_forked_child(redis_server: EmbeddedRedis) -> None:
    parent = get_redis(redis_server.url)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report whether it got its own, working client
        try:
            child = get_redis(redis_server.url)
            ok = child is not parent and child.ping()
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert get_redis(redis_server.url) is parent
