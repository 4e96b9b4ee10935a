"""Where each identity event goes: one table from event kind to Celery task name, and the task name decides the lane.

Producers and workers both publish through `publish()`; it takes any object with Celery's `send_task`, so shared/
never imports the worker package. Correlation and event ids travel in message headers so logs on both sides join.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from shared.events import EventKind, IdentityEvent

LANE_REVOCATION = "revocation"
LANE_SYNC = "sync"
LANES = (LANE_REVOCATION, LANE_SYNC)

#: Event kind -> task name. A task's lane is the prefix of its name (see `lane_of`).
TASK_FOR_KIND: dict[EventKind, str] = {
    # An "updated" notification does not say what changed: the revocation lane looks first (one Graph GET),
    # revokes if the user is disabled or gone, and hands anything else to the sync lane.
    EventKind.USER_CHANGED: "revocation.check_user",
    EventKind.USER_DISABLED: "revocation.revoke_user",
    EventKind.USER_SOFT_DELETED: "revocation.revoke_user",
    EventKind.USER_HARD_DELETED: "revocation.revoke_user",
    EventKind.USER_ENABLED: "sync.reactivate_user",
    EventKind.GROUP_CHANGED: "sync.group_changed",
    EventKind.OWNERSHIP_TRANSFER: "sync.transfer_ownership",
}

#: Sync-lane tasks a worker names for a hand-off, where the kind alone would pick the other lane: an "updated" user
#: the revocation lane found enabled is reconciled by the sync lane (`TASK_FOR_KIND` would send it back to
#: `revocation.check_user`).
SYNC_TASK_FOR_KIND: dict[EventKind, str] = {
    EventKind.USER_CHANGED: "sync.user_changed",
    EventKind.USER_ENABLED: "sync.reactivate_user",
}

#: Every task a message may name. Publishing, republishing (parking, DLQ replay) and hand-offs refuse any other
#: name, so a typo or a renamed task fails at the sender instead of becoming an unroutable message.
TASK_NAMES: frozenset[str] = frozenset({*TASK_FOR_KIND.values(), *SYNC_TASK_FOR_KIND.values()})


class UnknownTask(ValueError):
    """A task name that is not in the dispatch table."""


def known_task(task_name: str) -> str:
    """`task_name` itself when the dispatch table knows it; `UnknownTask` otherwise."""
    if task_name not in TASK_NAMES:
        raise UnknownTask(f"task {task_name!r} is not in the dispatch table ({', '.join(sorted(TASK_NAMES))})")
    return task_name


def lane_of(task_name: str) -> str:
    lane = task_name.split(".", 1)[0]
    if lane not in LANES:
        raise ValueError(f"task {task_name!r} belongs to no lane")
    return lane


class TaskSender(Protocol):
    def send_task(self, name: str, args: Any = ..., kwargs: Any = ..., **options: Any) -> Any: ...


def message_headers(event: IdentityEvent) -> dict[str, str]:
    """Headers every identity message carries: ids for log correlation, and the publish time so `idsync status`
    can report the age of the oldest waiting message (kombu stores no enqueue time of its own)."""
    return {
        "event_id": event.id,
        "idsync_correlation_id": event.correlation_id,  # not "correlation_id": Celery owns that name
        "published_at": f"{time.time():.3f}",
    }


def publish(sender: TaskSender, event: IdentityEvent, task_name: str | None = None) -> str:
    """Enqueue `event` for its task on its lane; returns the task name. Raises whatever the broker raises.

    Callers that acknowledge upstream (HTTP 202, a saved deltaLink) must call this first and only acknowledge
    when it returned: that is the whole durability contract of the producers.
    """
    name = task_name or TASK_FOR_KIND[event.kind]
    sender.send_task(
        name,
        args=[event.to_message()],
        queue=lane_of(name),
        headers=message_headers(event),
        retry=False,
    )
    return name


def republish(
    sender: TaskSender,
    task_name: str,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    headers: dict[str, Any],
    *,
    task_id: str,
    retries: int = 0,
) -> str:
    """Send an existing message again (a parked message coming due, a replayed dead letter); returns the task name.

    The task name is checked against the table and the lane follows from it, as in `publish`. `published_at` is
    stamped afresh: it measures how long a message has waited *in its queue*, so the time it spent parked or
    dead-lettered must not count (otherwise `idsync status` reports a fresh republish as hours old).
    """
    name = known_task(task_name)
    sender.send_task(
        name,
        args=list(args),
        kwargs=dict(kwargs),
        queue=lane_of(name),
        headers={**headers, "published_at": f"{time.time():.3f}"},
        task_id=task_id,
        retries=retries,
        retry=False,
    )
    return name
