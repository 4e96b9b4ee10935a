"""Where each identity event goes: one table from event kind to Celery task name, and the task name decides the lane.

Producers and workers both publish through `publish()`; it takes any object with Celery's `send_task`, so shared/
never imports the worker package. Correlation and event ids travel in message headers so logs on both sides join.

Duplicate revocation work collapses here too (`PendingWork`): while a revocation task for a user waits in the queue,
another hint for that user adds nothing (the waiting task re-reads Graph when it starts), so it is not enqueued.
Without this, a burst of notifications naming a few users buries a real leaver behind thousands of identical tasks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from shared.events import EventKind, EventSource, IdentityEvent
from shared.logging import get_logger
from shared.redis_values import as_text_or_none

log = get_logger(__name__)

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
    # Decided by the sync lane's plan; the revocation lane re-checks scope against Graph before deactivating.
    EventKind.USER_OUT_OF_SCOPE: "revocation.deprovision_user",
    # Hints for users are coalesced in the sync backlog (shared/dirty_users.py); this drains it in batches.
    EventKind.SYNC_BACKLOG: "sync.drain_users",
    # An approved Salesforce request for a new Entra account (the reverse flow; `producers/request_poller.py`).
    EventKind.REQUEST_APPROVED: "sync.provision_request",
    # A full reconciliation run (docs/reconciliation.md), one at a time; on the sync lane, so the limiter's reserve
    # keeps revocations fast while it runs.
    EventKind.RECONCILE: "sync.reconcile",
}

#: Sync-lane tasks a worker names for a hand-off, where the kind alone would pick the other lane: an "updated" user
#: the revocation lane found enabled is reconciled by the sync lane (`TASK_FOR_KIND` would send it back to
#: `revocation.check_user`).
SYNC_TASK_FOR_KIND: dict[EventKind, str] = {
    EventKind.USER_CHANGED: "sync.user_changed",
    EventKind.USER_ENABLED: "sync.reactivate_user",
}

#: Tasks no event kind maps to: a worker or an operator names them. `revocation.retry_deactivation` tries a blocked
#: deactivation again (parked on a schedule by `shared.deactivation_retries`, or at once by `idsync review resolve`);
#: `revocation.release_held` deactivates a user the mass-deprovisioning guard held, once `idsync approve` lifted it.
SCHEDULED_TASKS: frozenset[str] = frozenset({"revocation.retry_deactivation", "revocation.release_held"})

#: The CRM Contact of a user: B2B guests (routed here by userType instead of to provisioning), removals of a
#: Contact-linked user (after the revocation lane's work), and Contact-linked employees. `sync.contact_refresh` is
#: the same work for a report whose manager changed, without fanning out further.
CONTACT_TASK = "sync.contact_changed"
CONTACT_REFRESH_TASK = "sync.contact_refresh"
CONTACT_TASKS: frozenset[str] = frozenset({CONTACT_TASK, CONTACT_REFRESH_TASK})

#: Every task a message may name. Publishing, republishing (parking, DLQ replay) and hand-offs refuse any other
#: name, so a typo or a renamed task fails at the sender instead of becoming an unroutable message.
TASK_NAMES: frozenset[str] = frozenset({*TASK_FOR_KIND.values(), *SYNC_TASK_FOR_KIND.values(), *SCHEDULED_TASKS,
                                        *CONTACT_TASKS})


def sync_task_for(user_type: str | None) -> str:
    """The sync-lane task for an enabled user's update: a B2B guest's (userType Guest) goes to their CRM Contact (a
    partner is a Contact, not a Salesforce user), anyone else's to provisioning. Producers and the revocation
    lane's hand-off both ask here, so the rule lives in one place."""
    if (user_type or "").casefold() == "guest":
        return CONTACT_TASK
    return SYNC_TASK_FOR_KIND[EventKind.USER_CHANGED]


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


#: What `publish` returns instead of a task name when a pending task for the same user absorbed the event.
COLLAPSED = "collapsed"
PENDING_PREFIX = "idsync:pending"
#: A claim lives this long until the send is confirmed: if the send fails and even the undo fails (Redis went away
#: in between), the orphan marker disappears on its own before the upstream retry (Graph's, the poller's) arrives.
PENDING_CLAIM_TTL_S = 10
#: Garbage collection only: a confirmed marker normally disappears when its task starts, long before this.
PENDING_TTL_S = 3600
#: A marker this old is presumed to belong to a message that was lost (or is stuck in a dead worker's prefetch until
#: the visibility timeout): the next hint is enqueued anyway, with a warning. This bounds how long a lost message can
#: suppress work for one user, at the price of at most one extra task per user per period during a real backlog.
PENDING_STALE_S = 120.0


class PendingWork:
    """One marker per (revocation task, user) while a message for it waits: claimed (`SET NX`) before sending,
    confirmed after the send, cleared by the worker when the task STARTS, before it re-reads Graph.

    Why this is safe under at-least-once delivery:
    - a marker exists only between "about to send" and "task started", and the task reads Graph after clearing it;
      so an event collapsed into a marker is always followed by a Graph read that sees its change;
    - a lost marker (Redis restart, eviction, a failed delete) only means a duplicate task, never a lost event;
    - a failed send undoes its claim, and an unconfirmed claim expires within `PENDING_CLAIM_TTL_S` anyway;
    - a marker whose message was lost after sending would suppress that user's hints: the marker holds the message
      id and its time, and after `stale_after_s` the next hint is enqueued anyway and logged.
    """

    def __init__(
        self,
        redis: Any,
        *,
        ttl_s: int = PENDING_TTL_S,
        stale_after_s: float = PENDING_STALE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.stale_after_s = stale_after_s
        self.clock = clock

    @staticmethod
    def key(task_name: str, object_id: str) -> str:
        return f"{PENDING_PREFIX}:{task_name}:{object_id}"

    def claim(self, task_name: str, object_id: str, message_id: str) -> str | None:
        """The marker value when the caller should send `message_id`; None when a pending task absorbs the event."""
        key = self.key(task_name, object_id)
        now = self.clock()
        value = f"{message_id} {now:.3f}"
        if self.redis.set(key, value, nx=True, ex=PENDING_CLAIM_TTL_S):
            return value
        current = as_text_or_none(self.redis.get(key))
        if current is None:
            # The pending task started between our SET and GET: it cleared the marker *before* reading Graph, and
            # our event happened before our SET, so that read sees it. Collapsing is still correct.
            return None
        holder, _, stamp = current.partition(" ")
        try:
            age = now - float(stamp)
        except ValueError:
            age = float("inf")  # unreadable: treat as stale rather than let it suppress for the whole TTL
        if age <= self.stale_after_s:
            return None
        log.warning("dispatch_pending_marker_stale", task=task_name, object_id=object_id,
                    pending_task_id=holder[:64], age_s=round(age, 1))
        self.redis.set(key, value, ex=PENDING_CLAIM_TTL_S)
        return value

    def confirm(self, task_name: str, object_id: str) -> None:
        """The message is in the broker: keep the marker until its task starts (or the TTL collects it).

        A no-op when the task already started and cleared it. Extending someone else's fresh claim is harmless:
        the staleness rule still bounds it."""
        self.redis.expire(self.key(task_name, object_id), self.ttl_s)

    def release(self, task_name: str, object_id: str, value: str) -> None:
        """Undo a claim whose send failed, if the marker is still ours (a stray delete only costs a duplicate)."""
        key = self.key(task_name, object_id)
        if as_text_or_none(self.redis.get(key)) == value:
            self.redis.delete(key)

    def clear(self, task_name: str, object_id: str) -> None:
        """Called by the worker at task start, before it reads Graph: any hint from now on needs a new task."""
        self.redis.delete(self.key(task_name, object_id))


#: Sync-lane hints about one user: coalesced in the backlog (`shared.dirty_users`) instead of one message each, and
#: applied in batches of up to 200 by `sync.drain_users` (one Salesforce read per batch, writes through collections).
BACKLOG_TASKS = frozenset({"sync.user_changed", "sync.reactivate_user"})
#: How long a scheduled drain keeps others from scheduling another; beat re-schedules a lost one after this.
DRAIN_SCHEDULE_TTL_S = 60.0


def _to_backlog(sender: TaskSender, redis: Any, event: IdentityEvent) -> None:
    """Mark the user dirty (in Redis: delivered) and make sure a drain task is on its way."""
    from shared.dirty_users import DirtyUsers

    backlog = DirtyUsers(redis)
    backlog.mark([event.object_id], event.observed_at.timestamp())
    schedule_drain(sender, backlog, event.tenant)


def schedule_drain(sender: TaskSender, backlog: Any, tenant: str) -> bool:
    """Publish one `sync.drain_users` unless one is already scheduled; True if this call published it."""
    if not backlog.schedule_drain(DRAIN_SCHEDULE_TTL_S):
        return False
    drain = IdentityEvent(kind=EventKind.SYNC_BACKLOG, source=EventSource.WORKER, tenant=tenant, object_id="backlog")
    try:
        publish(sender, drain)
    except BaseException:
        backlog.drain_started()  # the flag must not hold back the next hint's drain: nothing was sent
        raise
    return True


def publish(
    sender: TaskSender,
    event: IdentityEvent,
    task_name: str | None = None,
    *,
    pending: PendingWork | None = None,
) -> str:
    """Enqueue `event` for its task on its lane; returns the task name, or `COLLAPSED` when `pending` says a task for
    the same user already waits on the revocation lane (nothing is sent then). A hint for a user on the sync lane
    (`BACKLOG_TASKS`) goes to the sync backlog when `pending` gives the Redis to use. Raises whatever the broker or
    Redis raises.

    Callers that acknowledge upstream (HTTP 202, a saved deltaLink) must call this first and only acknowledge
    when it returned: that is the whole durability contract of the producers. A collapsed event counts as delivered:
    the waiting task re-reads Graph after this event happened.
    """
    name = known_task(task_name or TASK_FOR_KIND[event.kind])
    lane = lane_of(name)
    if pending is not None and name in BACKLOG_TASKS:
        _to_backlog(sender, pending.redis, event)
        return name
    message_id = uuid.uuid4().hex
    marks = pending if lane == LANE_REVOCATION else None  # the sync lane reconciles in bulk; nothing to collapse
    claim: str | None = None
    if marks is not None:
        claim = marks.claim(name, event.object_id, message_id)
        if claim is None:
            return COLLAPSED
    try:
        sender.send_task(
            name,
            args=[event.to_message()],
            queue=lane,
            headers=message_headers(event),
            retry=False,
            task_id=message_id,
        )
    except BaseException:
        if marks is not None and claim is not None:
            try:
                marks.release(name, event.object_id, claim)
            except Exception:  # noqa: BLE001 - the claim expires within PENDING_CLAIM_TTL_S anyway
                log.warning("dispatch_pending_release_failed", task=name, object_id=event.object_id)
        raise
    if marks is not None:
        try:
            marks.confirm(name, event.object_id)
        except Exception:  # noqa: BLE001 - the message is sent; an unconfirmed claim only means later duplicates
            log.warning("dispatch_pending_confirm_failed", task=name, object_id=event.object_id)
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
