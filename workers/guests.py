"""The sync lane's CRM tasks: B2B guests become Contacts under their company's Account, Contacts linked to Entra
users carry Entra's org data, and a guest removed from the tenant leaves an inactive Contact (never a deleted one).

Where the events come from (`shared.dispatch.sync_task_for` is the one routing rule):
- a guest's update: the delta poller and the revocation lane's hand-off route users with userType Guest to
  `sync.contact_changed` instead of provisioning (a partner is a Contact, not a Salesforce user); when the mapping's
  scope also provisions guests, this task hands the event on to `sync.user_changed`;
- a removal: the revocation lane, after its own work, sends a Contact-linked user here (`follow_up_removal`);
- an employee or manager: the sync lane offers its users through `contact_follow_ups` (wired by the sync lane);
- a manager's change: this task publishes `sync.contact_refresh` for every linked report (the reverse index), each
  its own message with its own retries.

Like every task, the event is only a hint: Graph and Salesforce are read again before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import shared_task

from shared.dispatch import CONTACT_REFRESH_TASK, CONTACT_TASK, SYNC_TASK_FOR_KIND, TaskSender, publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.guests.links import ContactLinks
from shared.guests.service import ContactDeps, ContactOutcome, sync_contact
from shared.limiter import SYNC_PAUSE_RECHECK_S
from shared.logging import get_logger
from shared.running_mapping import current_mapping
from workers.base import IdentityTask

log = get_logger("idsync.guests")

GUEST = "guest"


def follow_up_removal(sender: TaskSender, redis: Any, event: IdentityEvent) -> bool:
    """Called by the revocation lane after a disabled or deleted user was handled: a Contact-linked user's Contact
    is marked inactive on the sync lane. One Redis round trip; True when a follow-up was published."""
    if not ContactLinks(redis).concerned([event.object_id]):
        return False
    publish(sender, event.follow_up(EventKind.USER_CHANGED), CONTACT_TASK)
    return True


def contact_follow_ups(sender: TaskSender, redis: Any, event: IdentityEvent, entra_ids: Sequence[str]) -> list[str]:
    """The sync lane's hook for members (`workers.sync`, after each batch): of `entra_ids` (users it just
    reconciled), those whose change touches a Contact (linked themselves, or shown on linked reports' Contacts) get
    `sync.contact_changed`. Returns them. With `enrichment.employees: true` the sync lane sends every member
    instead."""
    concerned = ContactLinks(redis).concerned(list(entra_ids))
    for entra_id in concerned:
        publish(sender, _about(event, entra_id), CONTACT_TASK)
    return concerned


def _about(event: IdentityEvent, entra_id: str) -> IdentityEvent:
    """An event about another user, keeping the observation time and the correlation id of the change."""
    return IdentityEvent(kind=EventKind.USER_CHANGED, source=EventSource.WORKER, tenant=event.tenant,
                         object_id=entra_id, observed_at=event.observed_at, correlation_id=event.correlation_id)


def run_contact_task(task: IdentityTask, message: dict[str, Any], *, fan_out: bool) -> str:
    if task.ctx.limiter.sync_paused():
        task.defer(SYNC_PAUSE_RECHECK_S, "sync_paused")
    event = IdentityEvent.from_message(message)
    ctx = task.ctx
    mapping = current_mapping(ctx.settings)
    deps = ContactDeps(graph=ctx.graph(task.lane), salesforce=ctx.salesforce(task.lane), redis=ctx.redis,
                       mapping=mapping)
    result: ContactOutcome = sync_contact(deps, event.object_id, correlation_id=event.correlation_id,
                                          source_event=event.id, fan_out=fan_out)
    for report in result.reports:
        publish(task.app, _about(event, report), CONTACT_REFRESH_TASK)
    if result.guest and GUEST in mapping.compiled.user_types:
        # The mapping also provisions guests as Salesforce users: that is provisioning's work, handed on.
        publish(task.app, event.follow_up(EventKind.USER_CHANGED), SYNC_TASK_FOR_KIND[EventKind.USER_CHANGED])
    log.info("contact_task_done", entra_id=event.object_id, outcome=result.outcome, contact_id=result.contact_id,
             account_id=result.account_id, reports=len(result.reports))
    return result.outcome


@shared_task(base=IdentityTask, bind=True, name=CONTACT_TASK)
def contact_changed(self: IdentityTask, event: dict[str, Any]) -> str:
    return run_contact_task(self, event, fan_out=True)


@shared_task(base=IdentityTask, bind=True, name=CONTACT_REFRESH_TASK)
def contact_refresh(self: IdentityTask, event: dict[str, Any]) -> str:
    """A report whose manager (or a manager above) changed: their Contact only, no further fan-out."""
    return run_contact_task(self, event, fan_out=False)
