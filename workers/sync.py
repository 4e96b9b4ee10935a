"""The sync lane: joiners and movers, reactivation, and the follow-ups of revocations.

Every sync task first asks the limiter whether the sync lane is paused (Salesforce's daily allowance is nearly used
up and the rest is kept for revocations). When paused it parks itself for `SYNC_PAUSE_RECHECK_S` instead of calling
Salesforce; revocation tasks never ask.

What is implemented now, honestly:
- `sync.user_changed` / `sync.reactivate_user`: the tombstone check (an event observed before a revocation must not
  undo it), a Graph re-read, reactivation (activate + unfreeze) of an enabled user whose Salesforce user is inactive
  or frozen, and a hand-off to the revocation lane if Graph says the user is disabled or gone. Attribute mapping
  (profile, role, manager, ...) and joiner provisioning arrive in a later issue.
- Reactivation against a revocation racing it: the tombstone read at the start is read again right before
  activating (a newer one means a revocation is under way: do nothing), and cleared afterwards with a
  compare-and-delete (only the value read, never one a revocation wrote meanwhile). If that delete finds a newer
  tombstone, a revocation ran during the activation and may have been undone by it: the user goes back to the
  revocation lane, which re-reads Graph and revokes again.
- `sync.transfer_ownership`: records a pending transfer in Redis and audits it; the transfer itself is a later issue.
- `sync.group_changed`: audits the change for the group-mapping issue; nothing is applied yet.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from shared.audit import audit
from shared.dispatch import publish
from shared.events import EventKind, IdentityEvent
from shared.limiter import SYNC_PAUSE_RECHECK_S
from workers.base import IdentityTask
from workers.revocation import (
    SOFT_DELETED,
    SalesforceUser,
    find_salesforce_user,
    read_entra_user,
    relink_on_not_found,
)

_REVOCATION_KIND = {SOFT_DELETED: EventKind.USER_SOFT_DELETED}


def _wait_if_paused(task: IdentityTask) -> None:
    if task.ctx.limiter.sync_paused():
        task.defer(SYNC_PAUSE_RECHECK_S, "sync_paused")


def reconcile_user(task: IdentityTask, message: dict[str, Any]) -> str:
    _wait_if_paused(task)
    event = IdentityEvent.from_message(message)
    ctx = task.ctx
    links, redis, entra_id, cid = ctx.links, ctx.redis, event.object_id, event.correlation_id
    tombstone = links.tombstone(entra_id)
    if tombstone is not None and tombstone > event.observed_at.timestamp():
        audit(redis, "sync_user", entra_id, None, "skipped_tombstone", cid, tombstone=tombstone)
        return "skipped_tombstone"

    state = read_entra_user(ctx.graph(task.lane), entra_id)
    if not state.enabled:
        publish(task.app, event.follow_up(_REVOCATION_KIND.get(state.status, EventKind.USER_DISABLED)))
        audit(redis, "sync_user", entra_id, None, "handed_to_revocation", cid, entra_status=state.status)
        return "handed_to_revocation"

    sf = ctx.salesforce(task.lane)
    user = find_salesforce_user(sf, links, entra_id, state.upn)
    if user is None:
        audit(redis, "sync_user", entra_id, None, "no_salesforce_user", cid)
        return "no_salesforce_user"
    links.set_link(entra_id, user.id, state.upn)

    if tombstone is None:
        # Only undo what idsync did. A Salesforce user who is inactive or frozen without our tombstone was switched
        # off by someone in Salesforce (licences, an investigation): an enabled Entra account is no reason to
        # turn them back on. The first full delta round would otherwise reactivate every such user.
        audit(redis, "sync_user", entra_id, user.id, "in_sync", cid, salesforce_active=user.is_active)
        return "in_sync"

    if links.tombstone(entra_id) != tombstone:
        # A revocation was observed since the first read (or another reactivation finished): it decides, not us.
        audit(redis, "sync_user", entra_id, user.id, "skipped_tombstone", cid, reason="revocation_under_way")
        return "skipped_tombstone"

    def reactivate(found: SalesforceUser) -> bool:
        changed = False
        if found.is_active is not True:
            # Activate before unfreezing: if activation is refused (e.g. no licence), the user stays unable to log in.
            sf.activate_user(found.id)
            audit(redis, "activate", entra_id, found.id, "done", cid, upn=state.upn,
                  before={"IsActive": found.is_active}, after={"IsActive": True}, rule="joiner:entra_enabled",
                  source_event=event.id)
            changed = True
        login = sf.get_user_login(found.id)
        if login is not None and login.get("IsFrozen"):
            sf.unfreeze_user(found.id)
            audit(redis, "unfreeze", entra_id, found.id, "done", cid, upn=state.upn, before={"IsFrozen": True},
                  after={"IsFrozen": False}, rule="joiner:entra_enabled", source_event=event.id)
            changed = True
        return changed

    acted_on, changed = relink_on_not_found(sf, links, redis, entra_id, state.upn, cid, user, reactivate)
    if acted_on is None:
        audit(redis, "sync_user", entra_id, None, "no_salesforce_user", cid)
        return "no_salesforce_user"
    if not links.clear_tombstone_if(entra_id, tombstone):
        # A revocation wrote its tombstone while we were activating; if it acted before our activation, we just
        # undid it. The revocation lane re-reads Graph and revokes again if the user is still meant to be out.
        publish(task.app, event.follow_up(EventKind.USER_DISABLED))
        audit(redis, "sync_user", entra_id, acted_on.id, "handed_to_revocation", cid,
              reason="revoked_during_reactivation")
        return "handed_to_revocation"
    outcome = "reactivated" if changed else "in_sync"
    audit(redis, "sync_user", entra_id, acted_on.id, outcome, cid, upn=state.upn, source_event=event.id,
          observed_at=event.observed_at.timestamp())
    return outcome


@shared_task(base=IdentityTask, bind=True, name="sync.user_changed")
def user_changed(self: IdentityTask, event: dict[str, Any]) -> str:
    return reconcile_user(self, event)


@shared_task(base=IdentityTask, bind=True, name="sync.reactivate_user")
def reactivate_user(self: IdentityTask, event: dict[str, Any]) -> str:
    """Same path as `user_changed`: Graph decides whether the user is really enabled again."""
    return reconcile_user(self, event)


# `sync.transfer_ownership` lives in workers/ownership_transfer.py (leavers in depth).


@shared_task(base=IdentityTask, bind=True, name="sync.group_changed")
def group_changed(self: IdentityTask, event: dict[str, Any]) -> str:
    """Audited only, for the group-mapping issue to pick up."""
    _wait_if_paused(self)
    evt = IdentityEvent.from_message(event)
    audit(self.ctx.redis, "group_changed", None, None, "recorded", evt.correlation_id, group_id=evt.object_id)
    return "recorded"
