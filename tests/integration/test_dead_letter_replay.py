"""An event that keeps failing ends in the dead-letter queue, and an operator replays it with the CLI once the cause
is fixed: `python -m ops dlq list|show|replay`, run as the operator would, against the same Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent

pytestmark = pytest.mark.integration


def _ops(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`idsync <args>` in the test's directory with the test's settings."""
    return subprocess.run(
        [sys.executable, "-m", "ops", *args], cwd=stack.tmp, env={**os.environ, **stack.env},
        capture_output=True, text=True, timeout=60,
    )


def _dlq_list(stack: Any) -> list[dict[str, Any]]:
    done = _ops(stack, "dlq", "list", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_failing_event_reaches_dlq_and_cli_replay_applies_it_once_fault_is_cleared(stack, wait_for):
    user, sf_user = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"error_rate": 1.0, "error_kinds": ["503"]}})
    stack.start_worker("revocation")
    max_retries = stack.settings().max_retries

    event = IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"])
    publish(stack.celery(), event)

    listed = wait_for(lambda: _dlq_list(stack), timeout=30, interval=0.5, what="the entry in `dlq list`")
    assert len(listed) == 1
    entry_id = listed[0]["id"]
    assert listed[0]["task"] == "revocation.revoke_user"
    assert listed[0]["correlation_id"] == event.correlation_id

    shown = _ops(stack, "dlq", "show", entry_id, "--json")
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)
    assert entry["id"] == entry_id
    assert entry["lane"] == "revocation"
    assert entry["args"] == [event.to_message()]
    assert entry["error_class"] == "RetryableError"
    assert entry["attempts"] == max_retries + 1
    assert entry["traceback"]
    assert [a["error_class"] for a in entry["history"]] == ["RetryableError"] * (max_retries + 1)
    assert entry["first_failed_at"] < entry["last_failed_at"]  # ISO 8601 strings in UTC sort like the times

    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"error_rate": 0.0}})
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is True  # nothing was applied while failing
    assert stack.audit("deactivate", user["id"]) == []
    replayed = _ops(stack, "dlq", "replay", entry_id)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr

    wait_for(lambda: stack.audit("revoke", user["id"]), timeout=30, what="the replayed revocation")
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is False
    assert stack.org.frozen(sf_user["Id"])
    assert [r["outcome"] for r in stack.audit("deactivate", user["id"])] == ["done"]
    assert _dlq_list(stack) == []

    again = _ops(stack, "dlq", "replay", entry_id)
    assert again.returncode == 2  # replayed: it left the DLQ, so the id names nothing any more
    assert again.stderr.startswith(f"idsync: no dead letter '{entry_id}'")
    assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]


def test_dlq_replay_all_from_the_cli_republishes_every_entry_and_the_worker_applies_them(stack, wait_for):
    leavers = [stack.active_member_in_salesforce(skip=skip) for skip in (1, 2)]
    for user, _ in leavers:
        stack.tenant.disable(user["id"])
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"error_rate": 1.0, "error_kinds": ["503"]}})
    stack.start_worker("revocation")
    celery = stack.celery()
    for user, _ in leavers:
        publish(celery, IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA,
                                      tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"]))
    listed = wait_for(lambda: len(entries := _dlq_list(stack)) == 2 and entries, timeout=60, interval=0.5,
                      what="both entries in `dlq list`")
    assert {e["args"][0]["object_id"] for e in listed} == {user["id"] for user, _ in leavers}
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"error_rate": 0.0}})
    assert all(stack.audit("revoke", user["id"]) == [] for user, _ in leavers)

    replayed = _ops(stack, "dlq", "replay", "--all")

    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    for user, sf_user in leavers:
        wait_for(lambda u=user: stack.audit("revoke", u["id"]), timeout=30, what=f"{user['id']} revoked on replay")
        assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]
        assert stack.org.user(user["userPrincipalName"])["IsActive"] is False
        assert stack.org.frozen(sf_user["Id"])
    assert _dlq_list(stack) == []
