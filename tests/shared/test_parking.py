"""Parking: long waits live in Redis, scored by due time; each due message is leased to one scheduler and leaves the
set only once its republish is acknowledged, so a scheduler that dies holding it cannot lose it."""

from __future__ import annotations

import fakeredis
import pytest

from shared import parking


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def _park(r, due_at: float, name: str = "sync.user_changed", queue: str = "sync", **kw) -> None:
    parking.park(r, name, [{"id": name}], {"k": 1}, {"event_id": "e"}, queue, due_at, **kw)


def test_only_due_messages_are_leased_earliest_first_with_everything_needed_to_republish(r) -> None:
    _park(r, 300.0, "sync.c")
    _park(r, 100.0, "sync.a", task_id="t-a", retries=2)
    _park(r, 200.0, "sync.b")

    leased = parking.lease_due(r, now=250.0)
    assert [m.task for m in leased] == ["sync.a", "sync.b"]
    a = leased[0]
    assert (a.args, a.kwargs, a.headers, a.queue, a.due_at, a.task_id, a.retries) == (
        [{"id": "sync.a"}],
        {"k": 1},
        {"event_id": "e"},
        "sync",
        100.0,
        "t-a",
        2,
    )
    assert parking.next_due(r) == 300.0
    assert parking.count(r) == 3  # leased messages still count until their republish is acknowledged


def test_a_leased_message_is_never_handed_out_twice_and_limit_is_respected(r) -> None:
    for i in range(5):
        _park(r, float(i), f"sync.m{i}")
    first = parking.lease_due(r, now=10.0, limit=3)
    second = parking.lease_due(r, now=10.0, limit=3)
    assert len(first) == 3 and len(second) == 2
    assert not {m.id for m in first} & {m.id for m in second}
    assert parking.lease_due(r, now=10.0) == []
    for message in first + second:
        assert parking.ack(r, message) is True
    assert parking.count(r) == 0 and parking.next_due(r) is None


def test_a_released_message_keeps_its_due_time(r) -> None:
    _park(r, 50.0)
    [message] = parking.lease_due(r, now=60.0)
    assert parking.release(r, message) is True
    assert parking.lease_due(r, now=49.0) == []
    assert parking.lease_due(r, now=50.0) == [message]


def test_a_lease_whose_scheduler_died_is_parked_again_when_it_expires(r) -> None:
    _park(r, 50.0, task_id="t-1")
    [lost] = parking.lease_due(r, now=60.0, lease_s=30.0)  # ... and the scheduler is killed before republishing

    assert parking.requeue_expired(r, now=89.0) == 0  # the lease still holds
    assert parking.lease_due(r, now=89.0) == []
    assert parking.requeue_expired(r, now=91.0) == 1
    [again] = parking.lease_due(r, now=91.0)
    assert again.task_id == "t-1" and again == lost
    assert parking.ack(r, again) is True and parking.count(r) == 0


def test_an_ack_after_the_lease_expired_leaves_the_requeued_copy_for_the_next_pass(r) -> None:
    _park(r, 50.0)
    [slow] = parking.lease_due(r, now=60.0, lease_s=30.0)
    parking.requeue_expired(r, now=100.0)

    assert parking.ack(r, slow) is False  # republished late: the requeued copy goes out once more (at least once)
    assert parking.count(r) == 1 and parking.count_by_lane(r)["sync"] == 1


def test_parked_messages_are_counted_per_lane_until_acknowledged(r) -> None:
    _park(r, 10.0, "revocation.revoke_user", queue="revocation")
    _park(r, 10.0, "sync.a")
    _park(r, 20.0, "sync.b")
    assert parking.count_by_lane(r) == {"revocation": 1, "sync": 2}

    leased = parking.lease_due(r, now=15.0)
    assert parking.count_by_lane(r) == {"revocation": 1, "sync": 2}
    for message in leased:
        if message.queue == "sync":
            parking.release(r, message)
        else:
            parking.ack(r, message)
    assert parking.count_by_lane(r) == {"revocation": 0, "sync": 2}
    [again] = [m for m in parking.lease_due(r, now=15.0) if m.task == "sync.a"]
    parking.ack(r, again)
    parking.ack(r, again)  # a second ack changes nothing
    assert parking.count_by_lane(r) == {"revocation": 0, "sync": 1}
