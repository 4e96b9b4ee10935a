"""A message that must wait longer than a countdown may safely last is parked in Redis, and the real `idsync beat`
brings it back when it is due: the worker then applies it. Without beat it stays parked.

How the message gets parked is the product's own path: Graph answers 429 with a Retry-After above the park
threshold (IDSYNC_PARK_THRESHOLD_S is 5 s in the harness), so the revocation task parks itself.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent

pytestmark = pytest.mark.integration

#: Above the harness's 5 s park threshold, so the throttled task is parked rather than retried with a countdown.
RETRY_AFTER_S = 6


def _finished(stack: Any, name: str, correlation_id: str) -> list[dict[str, Any]]:
    records = []
    for line in stack.log(name).splitlines():
        if line.startswith(b"{"):
            record = json.loads(line)
            if record.get("event") == "task_finished" and record.get("correlation_id") == correlation_id:
                records.append(record)
    return records


def test_a_parked_revocation_is_republished_by_beat_when_due_and_applied(stack, wait_for):
    user, sf_user = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])
    stack.start_worker("revocation")
    stack.admin("PATCH", "/_sandbox/faults",
                {"graph": {"throttle_rate": 1.0, "throttle_retry_after_s": RETRY_AFTER_S}})
    event = IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.WEBHOOK,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"])
    publish(stack.celery(), event)

    (parked,) = wait_for(lambda: [r for r in _finished(stack, "worker-revocation", event.correlation_id)
                                  if r["outcome"] == "parked"], timeout=30, what="the throttled task parked")
    parked_at = time.monotonic()
    assert parked["delay_s"] > stack.settings().park_threshold_s
    stack.admin("PATCH", "/_sandbox/faults", {"graph": {"throttle_rate": 0.0}})

    # Due after delay_s; without a scheduler nothing brings it back, however long it waits.
    time.sleep(max(0.0, parked["delay_s"] + 2 - (time.monotonic() - parked_at)))
    assert [r["outcome"] for r in _finished(stack, "worker-revocation", event.correlation_id)] == ["parked"]
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is True

    stack.start("beat", "beat")

    done = wait_for(lambda: [r for r in _finished(stack, "worker-revocation", event.correlation_id)
                             if r["outcome"] != "parked"], timeout=30, what="the republished task run")
    assert [r["outcome"] for r in done] == ["revoked"]
    assert done[0]["task_id"] == parked["task_id"], "the same message came back (same task id)"
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is False
    assert stack.org.frozen(sf_user["Id"])
    assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]
