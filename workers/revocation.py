"""The revocation lane: a leaver loses Salesforce access within seconds.

Events are hints (shared/events.py): each task re-reads the user from Graph, decides from what Graph says *now*,
and acts; so duplicates, late and reordered events are harmless (celery.md §4, level-triggered processing).

Revoking = find the Salesforce user (stored link, then FederationIdentifier = UPN, then Username = UPN; a stored link
Salesforce answers 404 for is dropped and the user looked up again), **freeze** it at once (log-in blocked even if
deactivation is refused), then **deactivate** it. A deactivation blocker (the last admin, a default owner...) leaves
the user frozen and opens a review item: a human must act, replaying would not help, so it is not a dead letter. The
revocation tombstone is written before any Salesforce call, so an older sync event cannot undo the revocation even
while it is in progress. Ownership transfer is a follow-up on the sync lane, never inline: it is slow and must not
delay the next leaver. Revocation tasks never check the sync pause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import shared_task

from shared.audit import audit
from shared.dispatch import PendingWork, publish, sync_task_for
from shared.errors import NotFound, PermanentError
from shared.events import EventKind, IdentityEvent
from shared.identity_links import IdentityLinks
from shared.logging import get_logger
from workers.base import IdentityTask
from workers.guests import follow_up_removal

log = get_logger("idsync.revocation")
T = TypeVar("T")

GRAPH_SELECT = ["id", "accountEnabled", "userPrincipalName", "mail", "employeeId", "userType"]

#: Salesforce error codes meaning "this user cannot be deactivated until someone changes org data".
DEACTIVATION_BLOCKERS = frozenset({"FIELD_INTEGRITY_EXCEPTION", "CANNOT_DISABLE_LAST_ADMIN"})

ENABLED = "enabled"
DISABLED = "disabled"
SOFT_DELETED = "soft_deleted"
HARD_DELETED = "hard_deleted"


@dataclass(frozen=True)
class EntraState:
    """What Graph says about a user right now."""

    status: str
    upn: str | None
    user_type: str | None = None  # Member or Guest, when Graph said

    @property
    def enabled(self) -> bool:
        return self.status == ENABLED


@dataclass(frozen=True)
class SalesforceUser:
    id: str
    is_active: bool | None  # None: found by stored link only, state not read


def read_entra_user(graph: Any, entra_id: str) -> EntraState:
    """Enabled, disabled, soft-deleted (in deletedItems) or hard-deleted (gone everywhere)."""
    user = graph.get_user(entra_id, select=GRAPH_SELECT)
    if user is not None:
        status = DISABLED if user.get("accountEnabled") is False else ENABLED
        return EntraState(status, user.get("userPrincipalName"), user.get("userType"))
    deleted = graph.get_deleted_user(entra_id)
    if deleted is not None:
        return EntraState(SOFT_DELETED, _undeleted_upn(entra_id, deleted.get("userPrincipalName")))
    return EntraState(HARD_DELETED, None)


def _undeleted_upn(entra_id: str, upn: str | None) -> str | None:
    """Graph renames a soft-deleted user's UPN to `{objectId without dashes}{original UPN}`."""
    prefix = entra_id.replace("-", "")
    if upn and upn.startswith(prefix) and len(upn) > len(prefix):
        return upn[len(prefix) :]
    return upn


def find_salesforce_user(sf: Any, links: IdentityLinks, entra_id: str, upn: str | None) -> SalesforceUser | None:
    """Stored link first (survives renames and hard deletes), then FederationIdentifier, then Username."""
    link = links.get_link(entra_id)
    upn = upn or (link.upn if link else None)
    record = sf.find_user(entra_id, upn, upn)
    if link and link.sf_user_id:
        if record and record.get("Id") == link.sf_user_id:
            return SalesforceUser(link.sf_user_id, bool(record.get("IsActive")))
        return SalesforceUser(link.sf_user_id, None)
    if record:
        return SalesforceUser(str(record["Id"]), bool(record.get("IsActive")))
    return None


def relink_on_not_found(
    sf: Any,
    links: IdentityLinks,
    redis: Any,
    entra_id: str,
    upn: str | None,
    cid: str,
    user: SalesforceUser,
    act: Callable[[SalesforceUser], T],
) -> tuple[SalesforceUser | None, T | None]:
    """`act(user)`, surviving a stale stored link; returns the user acted on (None: nobody found) and the result.

    A stored link can outlive its Salesforce user (a sandbox org refreshed, a link written against another org):
    Salesforce then answers 404 NOT_FOUND for that id, and replaying would fail the same way. So the stale id is
    dropped (the UPN is kept), the user is looked up again by federation id and username, and `act` runs once more
    on what is found. If the lookup finds the very id that was refused, the 404 means something else: it propagates.
    """
    try:
        return user, act(user)
    except NotFound as exc:
        refused = exc
    links.forget_salesforce_user(entra_id, user.id)
    found = find_salesforce_user(sf, links, entra_id, upn)
    if found is not None and found.id == user.id:
        raise refused
    log.warning("stale identity link dropped", entra_id=entra_id, stale_sf_user_id=user.id,
                found_sf_user_id=found.id if found else None)
    audit(redis, "relink", entra_id, found.id if found else None, "stale_link_dropped", cid,
          stale_sf_user_id=user.id, error=str(refused))
    if found is None:
        return None, None
    links.set_link(entra_id, found.id, upn)
    return found, act(found)


def revoke(task: IdentityTask, event: IdentityEvent, state: EntraState) -> str:
    """The one revocation path (check_user and revoke_user both end here); returns the outcome."""
    ctx = task.ctx
    links, redis, entra_id, cid = ctx.links, ctx.redis, event.object_id, event.correlation_id
    links.set_tombstone(entra_id, event.observed_at.timestamp())
    sf = ctx.salesforce(task.lane)
    user = find_salesforce_user(sf, links, entra_id, state.upn)
    link = links.get_link(entra_id)
    upn = state.upn or (link.upn if link else None)  # a hard-deleted user's UPN lives on in the link only
    if user is None:
        audit(redis, "revoke", entra_id, None, "no_salesforce_user", cid, entra_status=state.status, upn=upn,
              rule=_rule(state), source_event=event.id)
        return "no_salesforce_user"
    links.set_link(entra_id, user.id, state.upn)

    def freeze_and_deactivate(found: SalesforceUser) -> str:
        if found.is_active is False:
            return "already_revoked"
        login = sf.get_user_login(found.id)
        if login is not None and not login.get("IsFrozen"):
            sf.freeze_user(found.id, login)
            audit(redis, "freeze", entra_id, found.id, "done", cid, upn=upn, before={"IsFrozen": False},
                  after={"IsFrozen": True}, rule=_rule(state), source_event=event.id)
        return _deactivate(sf, links, redis, entra_id, found.id, cid, upn)

    acted_on, result = relink_on_not_found(sf, links, redis, entra_id, state.upn, cid, user, freeze_and_deactivate)
    if acted_on is None or result is None:
        audit(redis, "revoke", entra_id, None, "no_salesforce_user", cid, entra_status=state.status, upn=upn,
              rule=_rule(state), source_event=event.id)
        return "no_salesforce_user"
    user, outcome = acted_on, result

    # observed_at: when a producer first saw the change; revocation latency = this record's ts - observed_at.
    audit(redis, "revoke", entra_id, user.id, outcome, cid, entra_status=state.status,
          observed_at=event.observed_at.timestamp(), upn=upn, rule=_rule(state), source_event=event.id,
          before={"IsActive": user.is_active}, after={"IsActive": outcome == "frozen_blocked"})
    publish(task.app, event.follow_up(EventKind.OWNERSHIP_TRANSFER))
    return outcome


def _rule(state: EntraState) -> str:
    """The policy that made idsync revoke, for the audit trail: the Entra account state that requires it."""
    return f"leaver:entra_{state.status}"


def _deactivate(
    sf: Any, links: IdentityLinks, redis: Any, entra_id: str, sf_user_id: str, cid: str, upn: str | None
) -> str:
    try:
        sf.deactivate_user(sf_user_id)
    except PermanentError as exc:
        if exc.code not in DEACTIVATION_BLOCKERS:
            raise
        detail = f"user is frozen but Salesforce refuses deactivation: {exc.code}: {exc.message}"
        links.add_review(entra_id, sf_user_id, "deactivation_blocked", detail, upn=upn, code=exc.code,
                         correlation_id=cid)
        audit(redis, "deactivate", entra_id, sf_user_id, "blocked", cid, code=exc.code, reason=exc.message,
              upn=upn)
        return "frozen_blocked"
    audit(redis, "deactivate", entra_id, sf_user_id, "done", cid, upn=upn, before={"IsActive": True},
          after={"IsActive": False})
    return "revoked"


def hand_to_sync(task: IdentityTask, event: IdentityEvent, user_type: str | None = None) -> str:
    """The user is enabled and present: nothing to revoke; the sync lane reconciles (same correlation id). A B2B
    guest goes to their CRM Contact instead (`shared.dispatch.sync_task_for`)."""
    publish(task.app, event.follow_up(EventKind.USER_CHANGED), sync_task_for(user_type))
    return "handed_to_sync"


def revoke_or_hand_off(task: IdentityTask, message: dict[str, Any]) -> str:
    """Both revocation tasks: re-read Graph, revoke if the user is disabled or gone, else hand to the sync lane.

    The pending marker (shared.dispatch.PendingWork) is cleared first, BEFORE the Graph read: a hint published while
    the marker stood is covered by this read; one published after it gets a task of its own.
    """
    evt = IdentityEvent.from_message(message)
    PendingWork(task.ctx.redis).clear(task.name, evt.object_id)
    state = read_entra_user(task.ctx.graph(task.lane), evt.object_id)
    if state.enabled:
        return hand_to_sync(task, evt, state.user_type)
    outcome = revoke(task, evt, state)
    # After the revocation, never before it: a Contact-linked user (a B2B guest) gets their Contact marked inactive.
    follow_up_removal(task.app, task.ctx.redis, evt)
    return outcome


@shared_task(base=IdentityTask, bind=True, name="revocation.check_user")
def check_user(self: IdentityTask, event: dict[str, Any]) -> str:
    """An "updated" notification, which does not say what changed: find out, then act."""
    return revoke_or_hand_off(self, event)


@shared_task(base=IdentityTask, bind=True, name="revocation.revoke_user")
def revoke_user(self: IdentityTask, event: dict[str, Any]) -> str:
    """A disable/delete hint. If Graph now says the user is enabled (re-enabled since), do not revoke."""
    return revoke_or_hand_off(self, event)
