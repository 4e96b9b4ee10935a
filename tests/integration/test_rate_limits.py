"""Rate limits are fleet-wide: a Graph 429 holds off every worker process until Retry-After has passed, and when
Salesforce's daily allowance is nearly spent the sync lane waits (parked) while revocations still go through."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared import parking
from shared.dispatch import publish
from shared.dlq import DeadLetterQueue
from shared.events import EventKind, EventSource, IdentityEvent
from shared.limiter import Limiter

pytestmark = pytest.mark.integration

#: Below IDSYNC_PARK_THRESHOLD_S (5 in the harness), so throttled tasks retry with a countdown, not parked.
GRAPH_RETRY_AFTER_S = 4
#: Clock resolution between Redis TIME (the shared deadline) and the sandbox's request log (same host).
CLOCK_EPSILON_S = 0.05


def _event(stack: Any, kind: EventKind, entra_id: str) -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"],
                         object_id=entra_id)


def _log_records(stack: Any, *names: str) -> list[dict[str, Any]]:
    """The JSON log lines of the named processes."""
    records = []
    for name in names:
        for line in stack.log(name).splitlines():
            if line.startswith(b"{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records


def _finished(stack: Any, *names: str) -> list[dict[str, Any]]:
    return [r for r in _log_records(stack, *names) if r.get("event") == "task_finished"]


def _graph_requests(stack: Any, since: float) -> list[dict[str, Any]]:
    """Graph API calls (not token requests) the sandbox answered since `since`, oldest first."""
    items = stack.admin("GET", "/_sandbox/activity?kind=graph_request&limit=500")["items"]
    return sorted((i for i in items if i["at"] >= since and i["path"].startswith("/v1.0/")), key=lambda i: i["at"])


def _retry_after_windows(requests: list[dict[str, Any]], retry_after: float) -> list[list[dict[str, Any]]]:
    """Graph requests grouped by the Retry-After window they reached the sandbox in, each window opened by a 429.

    No timing margin is needed for a loaded machine: the sandbox logs a request when it answers it, the worker sets
    the shared deadline only after receiving that answer, so a request sent after the deadline is always logged at
    least `retry_after` after the 429 that opened the window. What may land inside a window are the requests other
    worker processes had already sent when the 429 came back: at most one per other process.
    """
    windows: list[list[dict[str, Any]]] = []
    for request in requests:
        if windows and request["at"] < windows[-1][0]["at"] + retry_after - CLOCK_EPSILON_S:
            windows[-1].append(request)
        elif request["status"] == 429:
            windows.append([request])
    return windows


def test_graph_429_makes_every_worker_wait_retry_after(stack, wait_for):
    stack.env["IDSYNC_MAX_RETRIES"] = "10"  # enough budget to outlast the throttling phase
    tenant = stack.env["IDSYNC_GRAPH_TENANT_ID"]
    state = stack.sandbox.state
    with state.lock:
        user_ids = [u["id"] for u in state.directory.users.values()
                    if u.get("accountEnabled") and u.get("userType") == "Member"][:4]
    workers = ("worker-revocation-a", "worker-revocation-b")
    for name in workers:
        stack.start_worker("revocation", name=name)
    limiter = Limiter(stack.redis, stack.settings())
    assert limiter.throttled_for("graph", tenant) == 0

    since = time.time()
    stack.admin("PATCH", "/_sandbox/faults",
                {"graph": {"throttle_rate": 1.0, "throttle_retry_after_s": GRAPH_RETRY_AFTER_S}})
    celery = stack.celery()
    for user_id in user_ids:
        publish(celery, _event(stack, EventKind.USER_CHANGED, user_id))

    # The first 429 sets the shared deadline that every process reads before calling Graph.
    wait_for(lambda: limiter.throttled_for("graph", tenant) > 0, timeout=30, what="the shared throttle deadline")

    def refused_locally() -> list[dict[str, Any]]:
        return [r for r in _finished(stack, *workers)
                if r.get("error_class") == "GraphThrottled" and "rate limit reached" in str(r.get("error"))]

    wait_for(lambda: len(_retry_after_windows(_graph_requests(stack, since), GRAPH_RETRY_AFTER_S)) >= 2
             and refused_locally(), timeout=30, interval=0.2,
             what="a second Retry-After window and a locally refused attempt")
    stack.admin("PATCH", "/_sandbox/faults", {"graph": {"throttle_rate": 0.0}})

    wait_for(lambda: len([r for r in _finished(stack, *workers) if r.get("outcome") == "handed_to_sync"])
             == len(user_ids), timeout=30, interval=0.2, what="every event processed after the throttling")

    requests = _graph_requests(stack, since)
    throttled = [r for r in requests if r["status"] == 429]
    windows = _retry_after_windows(requests, GRAPH_RETRY_AFTER_S)
    throttled_attempts = [r for r in _finished(stack, *workers) if r.get("error_class") == "GraphThrottled"]
    # Not one Graph request started inside an active Retry-After window, from either worker process: each window
    # holds the 429 that opened it and at most the one request the other process already had in flight,
    assert len(windows) >= 2
    assert all(len(window) <= len(workers) for window in windows), windows
    # and the other throttled attempts were held back by the shared deadline without calling Graph.
    assert len(throttled) < len(throttled_attempts)
    assert len(refused_locally()) == len(throttled_attempts) - len(throttled)
    # After the fault cleared every event was processed, none dead-lettered.
    assert [r["status"] for r in requests if r["status"] != 429] == [200] * len(user_ids)
    # each handed its user to the sync lane: into the backlog, with one drain message for all of them
    from shared.dirty_users import DirtyUsers

    assert stack.redis.llen("sync") == 1
    assert {c.entra_id for c in DirtyUsers(stack.redis).claim(100, lease_s=60)} == set(user_ids)
    assert DeadLetterQueue(stack.redis, 100, 86_400).list(limit=10) == []


@pytest.fixture
def restore_salesforce_limit(stack: Any) -> Iterator[None]:
    yield
    stack.admin("PATCH", "/_sandbox/config", {"salesforce": {"daily_api_limit": None}})  # null = default


def _daily_usage(stack: Any) -> tuple[int, int]:
    """(used, max) of the org's rolling daily API allowance, as a Salesforce admin reads it (this call counts)."""
    daily = stack.org.sf.limits()["DailyApiRequests"]
    return int(daily["Max"]) - int(daily["Remaining"]), int(daily["Max"])


def _parked(stack: Any, task: str, entra_id: str) -> list[parking.ParkedMessage]:
    messages = [parking.ParkedMessage.model_validate_json(raw) for raw in stack.redis.zrange(parking.PARKED_KEY, 0, -1)]
    return [m for m in messages if m.task == task and m.args and m.args[0].get("object_id") == entra_id]


def test_salesforce_usage_threshold_pauses_sync_but_not_revocation(stack, wait_for, restore_salesforce_limit):
    pause_share = stack.settings().sf_sync_pause_share
    leaver, leaver_sf = stack.active_member_in_salesforce()
    returner, returner_sf = stack.active_member_in_salesforce(skip=1)
    # Revoked earlier by idsync (its tombstone), now enabled in Entra again: a sync would reactivate them.
    stack.org.sf.User.update(returner_sf["Id"], {"IsActive": False})
    from shared.identity_links import IdentityLinks

    IdentityLinks(stack.redis).set_tombstone(returner["id"], time.time() - 60)
    stack.tenant.disable(leaver["id"])

    # Spend the org's allowance to just above the pause share, with room left for the revocation's own calls.
    used, _ = _daily_usage(stack)
    limit = max(200, used + 40)
    stack.admin("PATCH", "/_sandbox/config", {"salesforce": {"daily_api_limit": limit}})
    target = math.ceil(0.92 * limit)
    while used < target:
        used, _ = _daily_usage(stack)
    assert pause_share <= used / limit < 1.0

    stack.start_worker("revocation")
    stack.start_worker("sync")
    celery = stack.celery()
    publish(celery, _event(stack, EventKind.USER_ENABLED, returner["id"]))  # -> sync.reactivate_user
    publish(celery, _event(stack, EventKind.USER_DISABLED, leaver["id"]))  # -> revocation.revoke_user

    wait_for(lambda: stack.audit("revoke", leaver["id"]), timeout=30, what="the revocation")
    # the hint went to the sync backlog; the drain that would apply it waits, parked, while the pause lasts
    wait_for(lambda: _parked(stack, "sync.drain_users", "backlog"), timeout=30, what="the parked sync drain")
    from shared.dirty_users import DIRTY_KEY

    assert stack.redis.zscore(DIRTY_KEY, returner["id"]) is not None

    assert [r["outcome"] for r in stack.audit("revoke", leaver["id"])] == ["revoked"]
    assert [r["outcome"] for r in stack.audit("deactivate", leaver["id"])] == ["done"]
    assert parking.count(stack.redis) >= 1
    (parked,) = _parked(stack, "sync.drain_users", "backlog")
    assert parked.queue == "sync"
    assert parked.due_at > time.time()
    assert stack.audit("activate", returner["id"]) == []
    assert Limiter(stack.redis, stack.settings()).sync_paused()  # the workers saw the usage Salesforce reported
    assert DeadLetterQueue(stack.redis, 100, 86_400).list(limit=10) == []
    # As the Salesforce admin sees it (two more calls, still within the allowance):
    assert stack.org.user(leaver["userPrincipalName"])["IsActive"] is False
    assert stack.org.user(returner["userPrincipalName"])["IsActive"] is False
