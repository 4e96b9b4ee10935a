"""The sync backlog: users marked dirty are coalesced, claimed in batches under a lease, and never lost."""

from __future__ import annotations

import time

import redis

from shared.dirty_users import DirtyUsers


def test_marking_a_user_twice_keeps_one_entry_with_the_latest_observation(redis_client: redis.Redis) -> None:
    backlog = DirtyUsers(redis_client)
    assert backlog.mark(["u1", "u2"], observed_at=100.0) == 2
    assert backlog.mark(["u1"], observed_at=150.0) == 0
    assert backlog.mark(["u1"], observed_at=120.0) == 0  # an older hint does not move it back
    assert backlog.pending() == 2
    claimed = {c.entra_id: c.observed_at for c in backlog.claim(10, lease_s=60)}
    assert claimed == {"u1": 150.0, "u2": 100.0}


def test_claims_take_the_oldest_first_and_at_most_the_batch_size(redis_client: redis.Redis) -> None:
    backlog = DirtyUsers(redis_client)
    backlog.mark([f"u{i:03d}" for i in range(250)], observed_at=1.0)
    backlog.mark(["late"], observed_at=2.0)
    first = backlog.claim(200, lease_s=60)
    assert len(first) == 200 and "late" not in {c.entra_id for c in first}
    assert backlog.pending() == 51 and backlog.in_flight() == 200


def test_acked_users_leave_but_a_hint_during_the_batch_keeps_the_user_dirty(redis_client: redis.Redis) -> None:
    backlog = DirtyUsers(redis_client)
    backlog.mark(["u1", "u2"], observed_at=1.0)
    claimed = backlog.claim(10, lease_s=60)
    backlog.mark(["u2"], observed_at=5.0)  # changed again while being applied
    backlog.ack(c.entra_id for c in claimed)
    assert backlog.in_flight() == 0
    assert [c.entra_id for c in backlog.claim(10, lease_s=60)] == ["u2"]


def test_a_failed_batch_puts_its_users_back_with_their_observation_times(redis_client: redis.Redis) -> None:
    backlog = DirtyUsers(redis_client)
    backlog.mark(["u1"], observed_at=10.0)
    backlog.claim(10, lease_s=60)
    assert backlog.release(["u1"]) == 1
    assert [(c.entra_id, c.observed_at) for c in backlog.claim(10, lease_s=60)] == [("u1", 10.0)]


def test_users_of_a_worker_that_died_come_back_when_their_lease_runs_out(redis_client: redis.Redis) -> None:
    backlog = DirtyUsers(redis_client)
    backlog.mark(["u1", "u2"], observed_at=10.0)
    backlog.claim(10, lease_s=30)
    assert backlog.requeue_expired(now=time.time() + 5) == 0
    assert backlog.requeue_expired(now=time.time() + 31) == 2
    assert backlog.in_flight() == 0
    assert sorted(c.entra_id for c in backlog.claim(10, lease_s=30)) == ["u1", "u2"]


def test_one_drain_is_scheduled_until_a_drain_starts(redis_client: redis.Redis) -> None:
    backlog = DirtyUsers(redis_client)
    assert backlog.schedule_drain(ttl_s=30) is True
    assert backlog.schedule_drain(ttl_s=30) is False
    backlog.drain_started()
    assert backlog.schedule_drain(ttl_s=30) is True
