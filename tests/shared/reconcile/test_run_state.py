"""A run's state: one run at a time, and a run cut short resumes with what it had recorded (fakeredis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import fakeredis
import pytest

from shared.reconcile.run_state import (
    CURRENT_KEY,
    LOCK_KEY,
    RedisRunLog,
    RunInProgress,
    RunLock,
    RunLockLost,
    RunLog,
    recent_runs,
)


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_a_second_run_is_refused_while_the_first_holds_the_lock(redis) -> None:
    first = RunLock(redis)
    first.acquire()
    with pytest.raises(RunInProgress):
        RunLock(redis).acquire()
    first.release()
    RunLock(redis).acquire()


def test_the_lock_of_a_process_that_no_longer_exists_on_this_host_is_taken_over_at_once(redis) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    redis.set(LOCK_KEY, f"{socket.gethostname()}:{dead.pid}:abcd", ex=60)
    lock = RunLock(redis)
    lock.acquire()
    assert redis.get(LOCK_KEY) == lock.value


def test_a_live_holder_or_one_on_another_host_keeps_the_lock(redis) -> None:
    redis.set(LOCK_KEY, f"{socket.gethostname()}:{os.getpid()}:abcd", ex=60)
    with pytest.raises(RunInProgress):
        RunLock(redis).acquire()
    redis.set(LOCK_KEY, "another-host:1:abcd", ex=60)
    with pytest.raises(RunInProgress):
        RunLock(redis).acquire()


def test_a_run_cut_short_is_found_again_with_its_counts_and_what_it_finished(redis) -> None:
    run = RedisRunLog.start(redis, ["Sales Team West"])
    run.record_many([("u1", "update", {"changes": [{"field": "Title"}]}), ("u2", "unchanged", {})])
    run.chunk_done(["u1", "u2"])
    run.record("u3", "create", {"changes": [{"field": "User"}]})  # planned, chunk not finished

    resumed = RedisRunLog.unfinished(redis)
    assert resumed is not None and resumed.resumed and resumed.run_id == run.run_id
    assert resumed.scope == ["Sales Team West"]
    assert resumed.done_of(["u1", "u2", "u3"]) == {"u1", "u2"}
    assert resumed.recorded_of(["u1", "u2", "u3", "u4"]) == {"u1", "u2", "u3"}
    assert resumed.counts() == {"create": 1, "update": 1, "deprovision": 0, "review": 0, "unchanged": 1}
    assert [r["field"] for r in resumed.rows("changes")] == ["Title", "User"]
    assert resumed.meta()["chunks_done"] == 1 and resumed.meta()["users_done"] == 2


def test_a_finished_run_is_no_longer_resumed_and_shows_in_the_recent_runs(redis) -> None:
    run = RedisRunLog.start(redis)
    run.record("u1", "update", {})
    run.finish()
    assert RedisRunLog.unfinished(redis) is None
    assert redis.get(CURRENT_KEY) is None
    [recent] = recent_runs(redis)
    assert recent["run_id"] == run.run_id and recent["status"] == "done" and recent["counts"]["update"] == 1


def test_a_dry_run_keeps_its_state_in_memory_only(redis) -> None:
    before = redis.dbsize()
    run = RunLog("rec-x", dry_run=True)
    run.record("u1", "update", {"changes": [{"field": "Title"}]})
    run.chunk_done(["u1"])
    assert run.counts()["update"] == 1 and list(run.rows("changes")) == [{"field": "Title"}]
    assert redis.dbsize() == before


def test_a_run_whose_lock_ran_out_stops_at_its_next_refresh_instead_of_running_beside_another(redis) -> None:
    lock = RunLock(redis)
    lock.acquire()
    redis.delete(LOCK_KEY)  # its TTL ran out while a call blocked
    RunLock(redis).acquire()  # a second run took the lock
    with pytest.raises(RunLockLost, match="lost its lock"):
        lock.refresh()
    lock.release()  # no longer ours: nothing deleted
    assert redis.get(LOCK_KEY) is not None
