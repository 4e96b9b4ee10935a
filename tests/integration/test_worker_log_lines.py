"""A real `idsync worker` writes one line per task execution, ours (`task_finished`): Celery's own "Task ...
received" and "Task ... succeeded in ...: <result>" lines, which repeat the event payload, are not written at INFO."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent

pytestmark = pytest.mark.integration


def _records(stack: Any, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.log(name).splitlines() if line.startswith(b"{")]


def test_a_worker_logs_one_line_per_task_and_it_is_ours(stack, wait_for):
    user, _sf_user = stack.active_member_in_salesforce()
    stack.start_worker("revocation")
    event = IdentityEvent(kind=EventKind.USER_CHANGED, source=EventSource.WEBHOOK,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"])
    publish(stack.celery(), event)

    (finished,) = wait_for(lambda: [r for r in _records(stack, "worker-revocation")
                                    if r.get("event") == "task_finished"
                                    and r.get("correlation_id") == event.correlation_id],
                           timeout=30, what="the check_user task finished")
    assert finished["task"] == "revocation.check_user"
    task_id = finished["task_id"]
    about_the_task = [r for r in _records(stack, "worker-revocation") if task_id in json.dumps(r)]
    assert [r for r in about_the_task if str(r.get("logger", "")).startswith("celery")] == []
    assert [r["event"] for r in about_the_task].count("task_finished") == 1
