"""IdentityTask's failure handling, through a real broker: retry, park, dead-letter, poison messages, log context."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.exceptions
import structlog
from celery.canvas import Signature
from kombu.exceptions import OperationalError

from shared import parking
from shared.dispatch import publish
from shared.errors import SERVICE_GRAPH, GraphThrottled, PermanentError, RetryableError
from shared.events import EventKind, EventSource, IdentityEvent
from workers import scheduler
from workers.base import backoff_delay

ENTRA_ID = "0a1b2c3d-0000-4000-8000-000000000002"
UPN = "leaver2@contoso.com"
SF_ID = "005000000000002AAA"


def _event() -> IdentityEvent:
    return IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA, tenant="t1", object_id=ENTRA_ID)


@pytest.fixture
def leaver(graph: Any, salesforce: Any) -> None:
    graph.add_user(ENTRA_ID, UPN, enabled=False)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)


def test_backoff_is_full_jitter_capped_but_never_below_retry_after() -> None:
    delays = [backoff_delay(10, base_s=1.0, max_s=8.0) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays) and len(set(delays)) > 1
    after = [backoff_delay(0, base_s=1.0, max_s=8.0, retry_after=30.0) for _ in range(50)]
    assert all(30.0 <= d <= 31.0 for d in after)
    assert len(set(after)) > 1  # workers told to wait do not all wake at the same instant


def test_a_permanent_error_is_dead_lettered_at_once_with_everything_needed_to_replay(
    app, worker, ctx, graph, leaver, finished, waiter
):
    graph.fail("get_user", PermanentError("Insufficient privileges", service=SERVICE_GRAPH, status=403))
    event = _event()
    publish(app, event)
    waiter(lambda: ctx.dlq.size() == 1)
    waiter(lambda: finished.of("revocation.revoke_user"))  # the DLQ write comes before the task's end is signalled

    [entry] = ctx.dlq.list()
    [(_, task_id, _, _)] = finished.of("revocation.revoke_user")
    assert entry.id == task_id
    assert entry.task == "revocation.revoke_user" and entry.lane == "revocation"
    assert entry.args == [event.to_message()] and entry.kwargs == {}
    assert entry.headers["event_id"] == event.id and entry.headers["idsync_correlation_id"] == event.correlation_id
    assert entry.error_class == "PermanentError" and "Insufficient privileges" in entry.error_message
    assert "PermanentError" in entry.traceback and entry.attempts == 1
    assert entry.correlation_id == event.correlation_id and entry.event_id == event.id
    assert entry.first_failed_at <= entry.last_failed_at
    assert graph.names() == ["get_user"]  # no retry


def test_an_unexpected_exception_is_dead_lettered_at_once(app, worker, ctx, graph, leaver, waiter):
    graph.fail("get_user", ValueError("bad payload"))
    publish(app, _event())
    waiter(lambda: ctx.dlq.size() == 1)

    assert ctx.dlq.list()[0].error_class == "ValueError"
    assert graph.names() == ["get_user"]


def test_a_retryable_error_is_retried_then_dead_lettered_after_max_retries(
    app, worker, ctx, settings, graph, leaver, waiter
):
    graph.fail("get_user", RetryableError("Graph 502", service=SERVICE_GRAPH, status=502), times=50)
    publish(app, _event())
    waiter(lambda: ctx.dlq.size() == 1)

    [entry] = ctx.dlq.list()
    assert entry.error_class == "RetryableError" and entry.attempts == settings.max_retries + 1
    assert graph.names() == ["get_user"] * (settings.max_retries + 1)
    assert parking.count(ctx.redis) == 0


def test_a_retryable_error_that_clears_succeeds_on_retry(app, worker, ctx, graph, salesforce, leaver, finished, waiter):
    graph.fail("get_user", RetryableError("timeout", service=SERVICE_GRAPH))
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert ctx.dlq.size() == 0 and graph.names()[:2] == ["get_user", "get_user"]


@pytest.mark.parametrize(
    "transient",
    [
        OperationalError("Error 111 connecting to redis:6379. Connection refused."),
        redis.exceptions.ConnectionError("Connection closed by server."),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
    ],
    ids=["kombu-OperationalError", "redis-ConnectionError", "redis-TimeoutError"],
)
def test_a_transient_broker_or_redis_error_inside_a_task_is_retried_not_dead_lettered(
    app, worker, ctx, graph, leaver, finished, waiter, transient
):
    graph.fail("get_user", transient)
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert ctx.dlq.size() == 0 and graph.names()[:2] == ["get_user", "get_user"]


def test_a_dead_letter_keeps_its_first_failure_time_and_the_history_of_its_attempts(
    app, worker, ctx, settings, graph, leaver, waiter
):
    graph.fail("get_user", GraphThrottled("Graph 429", service=SERVICE_GRAPH, status=429, retry_after=0.01))
    graph.fail("get_user", RetryableError("Graph 502", service=SERVICE_GRAPH, status=502), times=50)
    published = time.time()
    publish(app, _event())
    waiter(lambda: ctx.dlq.size() == 1)

    [entry] = ctx.dlq.list()
    assert [a.error_class for a in entry.history] == ["GraphThrottled"] + ["RetryableError"] * settings.max_retries
    assert "429" in entry.history[0].message and "502" in entry.history[-1].message
    times = [a.time for a in entry.history]
    assert times == sorted(times) and entry.first_failed_at == times[0] >= published - 1
    assert entry.first_failed_at < entry.last_failed_at
    assert ctx.redis.keys("idsync:attempts:*") == []  # the history moved into the entry


def test_a_retry_is_published_with_a_fresh_publish_time(app, worker, ctx, graph, leaver, finished, waiter):
    from celery.signals import task_prerun

    seen: list[str] = []

    def record(task: Any = None, **_: Any) -> None:
        seen.append(str((task.request.headers or {}).get("published_at")))

    task_prerun.connect(record, weak=False)
    try:
        graph.fail("get_user", RetryableError("Graph 502", service=SERVICE_GRAPH, status=502))
        app.send_task("revocation.revoke_user", args=[_event().to_message()], queue="revocation",
                      headers={"published_at": "1000.000"})
        waiter(lambda: finished.outcomes("revocation.revoke_user"))
    finally:
        task_prerun.disconnect(record)

    assert seen[0] == "1000.000" and float(seen[1]) > 1000.0


def test_a_countdown_retry_shows_as_retrying_in_its_lane_not_as_nothing_waiting(
    app, worker, ctx, graph, leaver, finished, waiter
):
    from ops.status import unacked_by_lane

    graph.fail("get_user", GraphThrottled("429", service=SERVICE_GRAPH, status=429, retry_after=3))
    publish(app, _event())
    waiter(lambda: unacked_by_lane(ctx.redis)["revocation"]["retrying"] == 1)

    assert ctx.redis.llen("revocation") == 0  # "waiting 0": without the retrying count the leaver is invisible
    assert unacked_by_lane(ctx.redis)["sync"] == {"running": 0, "retrying": 0}
    waiter(lambda: finished.outcomes("revocation.revoke_user"))
    waiter(lambda: unacked_by_lane(ctx.redis)["revocation"]["retrying"] == 0)


def test_a_long_retry_after_is_parked_not_a_countdown_and_the_scheduler_brings_it_back(
    app, worker, ctx, graph, salesforce, leaver, finished, waiter
):
    graph.fail("get_user", GraphThrottled("429", service=SERVICE_GRAPH, status=429, retry_after=600))
    publish(app, _event())
    waiter(lambda: finished.of("revocation.revoke_user"))

    assert parking.count(ctx.redis) == 1
    [(_, task_id, _, _)] = finished.of("revocation.revoke_user")
    due = parking.next_due(ctx.redis)
    assert due is not None and due >= time.time() + 500
    # Nothing waits in the queue or as an unacked ETA message in the worker: only the parked copy exists.
    waiter(lambda: ctx.redis.hlen("unacked") == 0)
    assert ctx.redis.llen("revocation") == 0
    assert salesforce.writes() == [] and ctx.dlq.size() == 0

    assert scheduler.run_once(app, ctx.redis, now=time.time()) == 0  # not due yet
    assert scheduler.run_once(app, ctx.redis, now=due + 1) == 1
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    runs = finished.of("revocation.revoke_user")
    assert [run[1] for run in runs] == [task_id, task_id]  # same task id: its retry budget carries on
    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert parking.count(ctx.redis) == 0


def test_a_failed_retry_publish_is_dead_lettered_instead_of_dropped(
    app, worker, ctx, graph, leaver, waiter, monkeypatch
):
    def broker_down(self: Signature, *args: Any, **kwargs: Any) -> Any:
        raise OperationalError("broker unreachable")

    monkeypatch.setattr(Signature, "apply_async", broker_down)
    graph.fail("get_user", RetryableError("Graph 503", service=SERVICE_GRAPH, status=503))
    publish(app, _event())
    waiter(lambda: ctx.dlq.size() == 1)

    entry = ctx.dlq.list()[0]
    assert entry.error_class == "RetryableError" and "retry publish failed" in entry.error_message


def test_a_message_delivered_more_than_max_deliveries_times_is_dead_lettered_as_poison(
    app, worker, ctx, settings, leaver, finished, waiter
):
    # Three deliveries of one message (same task id, same retry count), as after two worker kills.
    message = _event().to_message()
    for _ in range(settings.max_deliveries + 1):
        app.send_task("revocation.revoke_user", args=[message], task_id="poison-1", queue="revocation")
    waiter(lambda: ctx.dlq.size() == 1)
    waiter(lambda: len(finished.of("revocation.revoke_user")) == 3)

    entry = ctx.dlq.get("poison-1")
    assert entry is not None and entry.error_class == "PoisonMessage"
    assert entry.attempts == settings.max_deliveries + 1 and entry.args == [message]
    assert finished.outcomes("revocation.revoke_user") == ["revoked", "already_revoked"]
    assert [run[2] for run in finished.of("revocation.revoke_user")][-1] == "IGNORED"


def test_every_execution_logs_one_outcome_line_with_the_event_context(app, worker, ctx, leaver, finished, waiter):
    event = _event()
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        publish(app, event)
        waiter(lambda: finished.outcomes("sync.transfer_ownership"))

    lines = [entry for entry in logs if entry["event"] == "task_finished"]
    assert [(line["task"], line["outcome"]) for line in lines] == [
        ("revocation.revoke_user", "revoked"),
        ("sync.transfer_ownership", "transfer_pending"),
    ]
    for line in lines:
        assert line["correlation_id"] == event.correlation_id
        assert line["attempts"] == 1 and line["duration_ms"] >= 0 and line["task_id"]
    assert lines[0]["event_id"] == event.id and lines[0]["lane"] == "revocation"
    assert lines[1]["lane"] == "sync"


def test_a_hard_time_limit_reported_by_the_worker_is_dead_lettered(app, ctx, leaver) -> None:
    app.loader.import_default_modules()
    from celery.exceptions import TimeLimitExceeded

    task = app.tasks["revocation.revoke_user"]
    event = _event()
    task.push_request(id="slow-1", retries=1, headers={"event_id": event.id}, called_directly=False)
    try:
        task.on_failure(TimeLimitExceeded(30), "slow-1", [event.to_message()], {}, None)
    finally:
        task.pop_request()

    entry = ctx.dlq.get("slow-1")
    assert entry is not None and entry.error_class == "TimeLimitExceeded" and entry.attempts == 2
    assert entry.correlation_id == event.correlation_id and entry.args == [event.to_message()]
