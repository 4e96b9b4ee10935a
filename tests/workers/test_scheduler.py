"""The scheduler moves due parked messages back to their queues through the dispatch table, and never loses one when
the broker fails or the scheduler itself dies mid-pass."""

from __future__ import annotations

import threading
import time
from typing import Any

import fakeredis
import pytest

from shared import parking
from shared.dlq import DeadLetterQueue
from workers.scheduler import run_forever, run_once


class SchedulerKilled(BaseException):
    """Stands in for SIGKILL arriving during the publish: nothing after it in the pass runs."""


class Sender:
    def __init__(self, fail: bool = False, die: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail
        self.die = die

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        if self.die:
            raise SchedulerKilled()
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


def test_due_messages_are_republished_with_their_task_id_retry_count_queue_and_a_fresh_publish_time(r) -> None:
    _park(r, due_at=100.0)
    _park(r, due_at=500.0, task_id="t2")
    sender = Sender()

    before = time.time()
    assert run_once(sender, r, now=200.0) == 1
    [sent] = sender.sent
    published_at = float(sent["headers"].pop("published_at"))
    assert sent == {
        "name": "sync.user_changed",
        "args": [{"id": "e"}],
        "kwargs": {},
        "queue": "sync",
        "headers": {"event_id": "e"},
        "task_id": "t1",
        "retries": 3,
        "retry": False,
    }
    assert published_at >= before - 0.001  # queue age counts from the republish, not from the first publish
    assert parking.count(r) == 1 and parking.count_by_lane(r)["sync"] == 1


def test_a_stale_publish_time_is_replaced_on_republish(r) -> None:
    parking.park(r, "sync.user_changed", [], {}, {"published_at": "1000.000"}, "sync", 100.0, task_id="t1")
    sender = Sender()
    before = time.time()
    run_once(sender, r, now=200.0)
    assert float(sender.sent[0]["headers"]["published_at"]) >= before - 0.001  # stamped to the millisecond


def test_a_scheduler_killed_during_the_republish_loses_nothing(r) -> None:
    _park(r, due_at=100.0)
    with pytest.raises(SchedulerKilled):
        run_once(Sender(die=True), r, now=200.0)
    assert parking.count(r) == 1  # still held, under a lease

    survivor = Sender()
    assert run_once(survivor, r, now=200.0) == 0  # the lease of the dead scheduler has not expired yet
    assert run_once(survivor, r, now=200.0 + parking.LEASE_S + 1) == 1
    assert [s["task_id"] for s in survivor.sent] == ["t1"] and parking.count(r) == 0


def test_a_parked_message_naming_an_unknown_task_is_dead_lettered_not_retried_for_ever(r) -> None:
    parking.park(r, "sync.renamed_long_ago", [{"id": "e"}], {}, {"event_id": "e"}, "sync", 100.0, task_id="t9")
    dlq = DeadLetterQueue(r, 100, 3600)
    sender = Sender()

    assert run_once(sender, r, now=200.0, dlq=dlq) == 0
    assert sender.sent == [] and parking.count(r) == 0
    entry = dlq.get("t9")
    assert entry is not None and entry.error_class == "UnknownTask" and entry.task == "sync.renamed_long_ago"


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
