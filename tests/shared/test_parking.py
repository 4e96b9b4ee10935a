"""Parking: long waits live in Redis, scored by due time, and each due message is handed out exactly once."""

from __future__ import annotations

import fakeredis
import pytest

from shared import parking


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def _park(r, due_at: float, name: str = "sync.user_changed", **kw) -> None:
    parking.park(r, name, [{"id": name}], {"k": 1}, {"event_id": "e"}, "sync", due_at, **kw)


def test_only_due_messages_are_popped_earliest_first_with_everything_needed_to_republish(r) -> None:
    _park(r, 300.0, "sync.c")
    _park(r, 100.0, "sync.a", task_id="t-a", retries=2)
    _park(r, 200.0, "sync.b")

    popped = parking.pop_due(r, now=250.0)
    assert [m.task for m in popped] == ["sync.a", "sync.b"]
    a = popped[0]
    assert (a.args, a.kwargs, a.headers, a.queue, a.due_at, a.task_id, a.retries) == (
        [{"id": "sync.a"}],
        {"k": 1},
        {"event_id": "e"},
        "sync",
        100.0,
        "t-a",
        2,
    )
    assert parking.count(r) == 1 and parking.next_due(r) == 300.0


def test_a_popped_message_is_never_handed_out_twice_and_limit_is_respected(r) -> None:
    for i in range(5):
        _park(r, float(i), f"sync.m{i}")
    first = parking.pop_due(r, now=10.0, limit=3)
    second = parking.pop_due(r, now=10.0, limit=3)
    assert len(first) == 3 and len(second) == 2
    assert not {m.id for m in first} & {m.id for m in second}
    assert parking.pop_due(r, now=10.0) == [] and parking.count(r) == 0 and parking.next_due(r) is None


def test_a_message_put_back_keeps_its_due_time(r) -> None:
    _park(r, 50.0)
    [message] = parking.pop_due(r, now=60.0)
    parking.park_message(r, message)
    assert parking.pop_due(r, now=49.0) == []
    assert parking.pop_due(r, now=50.0) == [message]
