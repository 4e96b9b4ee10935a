"""DLQ replay: applies once after the fault is fixed, and two concurrent replays publish once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shared.dispatch import publish
from shared.dlq import DeadLetter, DeadLetterQueue
from shared.errors import SERVICE_SALESFORCE, PermanentError
from shared.events import EventKind, EventSource, IdentityEvent
from workers.replay import replay, replay_all

ENTRA_ID = "0a1b2c3d-0000-4000-8000-000000000004"
UPN = "replayed@contoso.com"
SF_ID = "005000000000004AAA"


class RecordingSender:
    """Counts publishes; optionally slow, to widen the race window between two replayers."""

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail
        self.delay = delay
        self._lock = threading.Lock()

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        if self.delay:
            threading.Event().wait(self.delay)
        with self._lock:
            self.sent.append({"name": name, "args": args, "kwargs": kwargs, **options})


def _entry(entry_id: str = "task-1", lane: str = "revocation") -> DeadLetter:
    return DeadLetter(
        id=entry_id,
        task=f"{lane}.revoke_user" if lane == "revocation" else "sync.user_changed",
        args=[{"id": "e1"}],
        headers={"event_id": "e1", "correlation_id": "c1"},
        lane=lane,
        error_class="PermanentError",
    )


def test_a_replayed_dead_letter_applies_once_after_the_fault_is_cleared(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    graph.add_user(ENTRA_ID, UPN, enabled=False)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)
    salesforce.fail("freeze_user", PermanentError("no Manage Users", service=SERVICE_SALESFORCE, status=403))
    event = IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.WEBHOOK, tenant="t1", object_id=ENTRA_ID)
    publish(app, event)
    waiter(lambda: ctx.dlq.size() == 1)
    assert salesforce.users[SF_ID]["IsActive"] is True

    entry_id = ctx.dlq.list()[0].id
    salesforce.clear_failures()  # the operator fixed the permission
    assert replay(app, ctx.dlq, entry_id) is True
    assert replay(app, ctx.dlq, entry_id) is False  # already gone
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert salesforce.users[SF_ID]["IsActive"] is False and ctx.dlq.size() == 0
    replayed_id = finished.of("revocation.revoke_user")[-1][1]
    assert replayed_id != entry_id


def test_the_replayed_message_keeps_task_args_and_headers_names_its_origin_and_gets_a_fresh_publish_time(
    redis_client,
) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100, max_age_s=3600)
    entry = _entry()
    entry.headers["published_at"] = "1000.000"  # the original publish, long ago
    dlq_time = time.time()
    dlq.put(entry)
    sender = RecordingSender()
    assert replay(sender, dlq, "task-1") is True

    [sent] = sender.sent
    assert sent["name"] == "revocation.revoke_user" and sent["args"] == [{"id": "e1"}] and sent["queue"] == "revocation"
    published_at = float(sent["headers"].pop("published_at"))
    assert sent["headers"] == {"event_id": "e1", "correlation_id": "c1", "replay_of": "task-1"}
    assert published_at >= dlq_time - 0.001  # queue age starts at the replay, not at the original publish
    assert sent["task_id"] != "task-1"
    assert dlq.get("task-1") is None


def test_two_concurrent_replays_of_one_entry_publish_it_once(redis_server) -> None:
    import redis

    dlq_a = DeadLetterQueue(redis.Redis.from_url(redis_server.url, decode_responses=True), 100, 3600)
    dlq_b = DeadLetterQueue(redis.Redis.from_url(redis_server.url, decode_responses=True), 100, 3600)
    dlq_a.put(_entry())
    sender = RecordingSender(delay=0.05)
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def run(dlq: DeadLetterQueue) -> None:
        barrier.wait()
        results.append(replay(sender, dlq, "task-1"))

    threads = [threading.Thread(target=run, args=(d,)) for d in (dlq_a, dlq_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert sorted(results) == [False, True]
    assert len(sender.sent) == 1 and dlq_a.size() == 0


def test_a_failed_publish_keeps_the_entry_and_releases_the_claim(redis_client) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100, max_age_s=3600)
    dlq.put(_entry())
    try:
        replay(RecordingSender(fail=True), dlq, "task-1")
    except ConnectionError:
        pass
    else:
        raise AssertionError("the publish error must reach the caller")
    assert dlq.get("task-1") is not None
    assert replay(RecordingSender(), dlq, "task-1") is True


def test_an_entry_naming_a_task_outside_the_dispatch_table_is_not_replayed_and_stays(redis_client) -> None:
    from shared.dispatch import UnknownTask

    dlq = DeadLetterQueue(redis_client, max_entries=100, max_age_s=3600)
    dlq.put(_entry().model_copy(update={"task": "revocation.no_such_task"}))
    sender = RecordingSender()
    with pytest.raises(UnknownTask):
        replay(sender, dlq, "task-1")
    assert sender.sent == [] and dlq.get("task-1") is not None


def test_replay_all_counts_replayed_and_failed_per_lane(redis_client) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100, max_age_s=3600)
    for i in range(3):
        dlq.put(_entry(f"r{i}"))
    dlq.put(_entry("s0", lane="sync"))

    assert replay_all(RecordingSender(fail=True), dlq, lane="revocation") == (0, 3)
    sender = RecordingSender()
    assert replay_all(sender, dlq, lane="revocation") == (3, 0)
    assert {s["queue"] for s in sender.sent} == {"revocation"}
    assert dlq.size("revocation") == 0 and dlq.size("sync") == 1
