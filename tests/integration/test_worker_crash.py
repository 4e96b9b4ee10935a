"""A revocation survives the crash of the worker running it, and a message that keeps crashing its worker is
dead-lettered instead of looping for ever.

Celery on Redis (docs/decisions.md#visibility-timeout): a delivered message sits in kombu's `unacked` hash, scored in
`unacked_index` by delivery time, until the task finishes (acks_late).
- Whole worker SIGKILLed: nothing acks or rejects, the message stays in `unacked`. kombu puts it back on its queue
  when a consumer runs `QoS.restore_visible()` and the message is older than the visibility timeout. A consumer runs
  it once when it starts (`MultiChannelPoller.on_poll_init`, registered with the worker's event loop) and then on a
  periodic sweep (`unacked_restore_interval` 10 s x `unacked_restore_throttle` 10, about every 100 s). So a worker
  started *after* the visibility timeout expired restores the message at once; one started earlier would only get it
  on the next sweep.
- Pool child SIGKILLed (the main process survives): `WorkerLostError`, and `task_reject_on_worker_lost` requeues the
  message at once. `workers.base` counts deliveries per (task id, retries) and dead-letters the delivery after
  `max_deliveries` as a PoisonMessage.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from shared.dispatch import publish
from shared.dlq import DeadLetterQueue
from shared.events import EventKind, EventSource, IdentityEvent
from workers.base import DELIVERIES_PREFIX

pytestmark = pytest.mark.integration

SLOW_SALESFORCE_MS = 3000
#: kombu's Redis transport keeps delivered-but-unacknowledged messages here (no global_keyprefix configured).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"


def _revoke_event(stack: Any, entra_id: str) -> IdentityEvent:
    return IdentityEvent(
        kind=EventKind.USER_DISABLED,
        source=EventSource.DELTA,
        tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"],
        object_id=entra_id,
    )


def _delivery_counters(stack: Any) -> dict[str, int]:
    """Every `idsync:deliveries:{task_id}:{retries}` key and its value."""
    keys = sorted(stack.redis.scan_iter(match=f"{DELIVERIES_PREFIX}:*"))
    return {key: int(stack.redis.get(key) or 0) for key in keys}


def _single_counter(stack: Any, wait_for: Callable[..., Any], value: int) -> str:
    """The one delivery counter of the one message in play, once it has reached `value`."""

    def reached() -> str | None:
        counters = _delivery_counters(stack)
        assert len(counters) <= 1, f"expected one message in play, found counters {counters}"
        return next((k for k, v in counters.items() if v >= value), None)

    key = wait_for(reached, timeout=30, what=f"delivery {value} to start")
    return str(key)


def _pool_child(stack: Any, name: str, wait_for: Callable[..., Any]) -> psutil.Process:
    """The prefork pool process of a `--concurrency 1` worker (the only child of the worker's main process)."""
    main = psutil.Process(stack.procs[name].pid)

    def one_child() -> psutil.Process | None:
        children = [c for c in main.children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        return children[0] if len(children) == 1 else None

    return wait_for(one_child, timeout=15, what=f"{name} pool child")


def _set_short_visibility_timeout(stack: Any) -> int:
    """A visibility timeout that expires within the test; the settings validator wants it above the hard time
    limit, the park threshold and the longest backoff."""
    overrides = {
        "IDSYNC_VISIBILITY_TIMEOUT_S": "8",
        "IDSYNC_TASK_TIME_LIMIT_S": "6",
        "IDSYNC_PARK_THRESHOLD_S": "3",
        "IDSYNC_BACKOFF_MAX_S": "1",
    }
    stack.env.update(overrides)
    stack.settings()  # fails here, not in a worker, if the combination were invalid
    return int(overrides["IDSYNC_VISIBILITY_TIMEOUT_S"])


def test_worker_sigkilled_mid_task_applies_the_event_after_restart_once(stack, wait_for):
    vt = _set_short_visibility_timeout(stack)
    user, sf_user = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": SLOW_SALESFORCE_MS}})
    stack.start_worker("revocation")

    event = _revoke_event(stack, user["id"])
    publish(stack.celery(), event)
    counter = _single_counter(stack, wait_for, 1)  # the task is running (inside its first, slow, Salesforce call)

    stack.kill("worker-revocation", signal.SIGKILL)  # the whole process group: main process and pool child
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 0}})

    # Nothing acknowledged or rejected it: the message is held in kombu's unacked set, not back on the queue.
    assert stack.redis.hlen(UNACKED_KEY) == 1
    assert stack.redis.llen("revocation") == 0
    ((_tag, delivered_at),) = stack.redis.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is True
    assert stack.audit("deactivate", user["id"]) == []

    # kombu restores it when a consumer starts *after* the visibility timeout (restore_visible at poll init).
    wait_for(lambda: time.time() > delivered_at + vt + 1, timeout=vt + 15, what="visibility timeout to pass")
    stack.start_worker("revocation", name="worker-revocation-restarted")

    wait_for(lambda: stack.audit("revoke", user["id"]), timeout=30, what="revocation after the restart")
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is False
    assert stack.org.frozen(sf_user["Id"])
    deactivations = stack.audit("deactivate", user["id"])
    assert [(r["outcome"], r["sf_user_id"]) for r in deactivations] == [("done", sf_user["Id"])]
    assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]
    # It was the same message delivered a second time (restored), not a new one.
    assert stack.redis.get(counter) == "2"
    wait_for(lambda: stack.redis.hlen(UNACKED_KEY) == 0, what="the restored message to be acknowledged")


def test_message_that_kills_its_worker_twice_is_dead_lettered(stack, wait_for):
    user, sf_user = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])  # a delivery that got to run would revoke
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": SLOW_SALESFORCE_MS}})
    main = stack.start_worker("revocation", concurrency=1)
    max_deliveries = stack.settings().max_deliveries
    assert max_deliveries == 2

    event = _revoke_event(stack, user["id"])
    publish(stack.celery(), event)

    killed: list[int] = []
    for delivery in range(1, max_deliveries + 1):
        _single_counter(stack, wait_for, delivery)
        child = _pool_child(stack, "worker-revocation", wait_for)
        assert child.pid not in killed
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=15)
        killed.append(child.pid)
        assert main.poll() is None, "the worker's main process must survive its pool child"

    dlq = DeadLetterQueue(stack.redis, 100, 86_400)
    entries = wait_for(lambda: dlq.list(limit=10), timeout=30, what="the poison message in the DLQ")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.error_class == "PoisonMessage"
    assert entry.task == "revocation.revoke_user"
    assert entry.lane == "revocation"
    assert entry.args == [event.to_message()]
    assert entry.correlation_id == event.correlation_id
    assert entry.event_id == event.id
    assert entry.attempts == max_deliveries + 1
    counters = _delivery_counters(stack)
    assert list(counters.values()) == [max_deliveries + 1]
    assert entry.id in next(iter(counters))

    # The third delivery was dropped before the task body ran: the message is gone, Salesforce untouched.
    wait_for(lambda: stack.redis.hlen(UNACKED_KEY) == 0 and stack.redis.llen("revocation") == 0,
             what="the poison message to be acknowledged")
    assert main.poll() is None
    assert stack.audit(entra_id=user["id"]) == []
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 0}})
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is True
    assert not stack.org.frozen(sf_user["Id"])
    assert b"WorkerLostError" in stack.log("worker-revocation")

