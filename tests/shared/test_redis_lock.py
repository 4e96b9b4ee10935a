"""The one Redis lock: one holder at a time, only the holder renews or releases, a dead holder can be replaced, and
a lock held too long is a retryable error, never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import redis

from shared.errors import RetryableError
from shared.redis_lock import LockBusy, RedisLock, holder_is_dead_here, holder_token


def test_a_second_holder_is_refused_until_the_first_releases(redis_client: redis.Redis) -> None:
    first, second = RedisLock(redis_client, "t:lock", 10_000), RedisLock(redis_client, "t:lock", 10_000)
    assert first.acquire()
    assert not second.acquire()
    assert second.holder() == first.token
    assert first.release()
    assert second.acquire()


def test_the_same_token_takes_its_lock_again_and_its_ttl_starts_over(redis_client: redis.Redis) -> None:
    # a redelivered task (same task id) must not be locked out by the lock its killed first delivery left behind
    lock = RedisLock(redis_client, "t:lock", 10_000, token="task-1")
    assert lock.acquire()
    redis_client.pexpire("t:lock", 50)
    assert RedisLock(redis_client, "t:lock", 10_000, token="task-1").acquire()
    assert redis_client.pttl("t:lock") > 5_000


def test_a_holder_whose_lock_expired_and_was_taken_can_neither_renew_nor_delete_it(redis_client: redis.Redis) -> None:
    stale = RedisLock(redis_client, "t:lock", 10_000)
    assert stale.acquire()
    redis_client.delete("t:lock")  # its TTL ran out while it was paused
    fresh = RedisLock(redis_client, "t:lock", 10_000)
    assert fresh.acquire()
    assert not stale.renew()
    assert not stale.release()
    assert fresh.holder() == fresh.token


def test_renewing_starts_the_ttl_again(redis_client: redis.Redis) -> None:
    lock = RedisLock(redis_client, "t:lock", 10_000)
    assert lock.acquire()
    redis_client.pexpire("t:lock", 100)
    assert lock.renew()
    assert redis_client.pttl("t:lock") > 5_000


def test_take_over_replaces_only_the_named_holder(redis_client: redis.Redis) -> None:
    redis_client.set("t:lock", "dead-one", px=10_000)
    lock = RedisLock(redis_client, "t:lock", 10_000)
    assert not lock.take_over("someone-else")
    assert lock.take_over("dead-one")
    assert lock.holder() == lock.token


def test_held_releases_after_the_block_even_when_it_raises(redis_client: redis.Redis) -> None:
    lock = RedisLock(redis_client, "t:lock", 10_000)
    with pytest.raises(ValueError), lock.held():
        assert redis_client.get("t:lock") == lock.token
        raise ValueError("the work failed")
    assert redis_client.get("t:lock") is None


def test_a_lock_held_past_the_wait_is_a_retryable_error_naming_the_holder(redis_client: redis.Redis) -> None:
    RedisLock(redis_client, "t:lock", 30_000, token="worker-a").acquire()
    waits: list[float] = []
    with pytest.raises(LockBusy) as err, RedisLock(redis_client, "t:lock", 30_000).held(0.2, sleep=waits.append):
        pass
    assert isinstance(err.value, RetryableError)
    assert "worker-a" in str(err.value)
    assert 1.0 <= (err.value.retry_after or 0) <= 30.0
    assert waits  # it polled while waiting instead of giving up at once


def test_waiting_ends_as_soon_as_the_holder_lets_go(redis_client: redis.Redis) -> None:
    holder = RedisLock(redis_client, "t:lock", 30_000)
    holder.acquire()
    waiter = RedisLock(redis_client, "t:lock", 30_000)

    def let_go(_seconds: float) -> None:  # the holder releases while the waiter waits
        holder.release()

    assert waiter.acquire_within(5.0, sleep=let_go)
    assert waiter.holder() == waiter.token


def test_a_client_returning_bytes_reads_the_holder_as_text(redis_server) -> None:  # noqa: ANN001 - fixture
    client = redis.Redis.from_url(redis_server.url)  # Celery's broker client: bytes
    try:
        lock = RedisLock(client, "t:bytes", 10_000)
        assert lock.acquire()
        assert lock.holder() == lock.token
        assert lock.release()
    finally:
        client.close()


def test_a_holder_token_names_this_host_and_process() -> None:
    host, pid, nonce = holder_token().split(":")
    assert host == socket.gethostname() and pid == str(os.getpid()) and len(nonce) == 8


def test_only_a_process_that_no_longer_exists_on_this_host_counts_as_dead() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert holder_is_dead_here(f"{socket.gethostname()}:{gone.pid}:abcd")
    assert not holder_is_dead_here(f"{socket.gethostname()}:{os.getpid()}:abcd")
    assert not holder_is_dead_here(f"another-host:{gone.pid}:abcd")
    assert not holder_is_dead_here("not-a-token")
