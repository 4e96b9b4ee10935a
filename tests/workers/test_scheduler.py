"""The scheduler moves due parked messages back to their queues and never loses one when the broker fails."""

from __future__ import annotations

import threading
from typing import Any

import fakeredis
import pytest

from shared import parking
from workers.scheduler import run_forever, run_once


class Sender:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append({"name": name, "args": args, "kwargs": kwargs, **options})


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def _park(r: Any, due_at: float, task_id: str = "t1") -> None:
    parking.park(
        r, "sync.user_changed", [{"id": "e"}], {}, {"event_id": "e"}, "sync", due_at, task_id=task_id, retries=3
    )


def test_due_messages_are_republished_with_their_task_id_retry_count_queue_and_headers(r) -> None:
    _park(r, due_at=100.0)
    _park(r, due_at=500.0, task_id="t2")
    sender = Sender()

    assert run_once(sender, r, now=200.0) == 1
    assert sender.sent == [
        {
            "name": "sync.user_changed",
            "args": [{"id": "e"}],
            "kwargs": {},
            "queue": "sync",
            "headers": {"event_id": "e"},
            "task_id": "t1",
            "retries": 3,
        }
    ]
    assert parking.count(r) == 1


def test_a_message_whose_republish_fails_is_put_back(r) -> None:
    _park(r, due_at=100.0)
    assert run_once(Sender(fail=True), r, now=200.0) == 0
    assert parking.count(r) == 1 and parking.next_due(r) == 100.0
    assert run_once(Sender(), r, now=200.0) == 1


def test_run_forever_stops_when_asked(r) -> None:
    _park(r, due_at=0.0)
    sender = Sender()
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(sender, r, stop), kwargs={"interval": 0.01})
    thread.start()
    deadline = threading.Event()
    for _ in range(500):
        if sender.sent:
            break
        deadline.wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and len(sender.sent) == 1
