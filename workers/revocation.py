"""The revocation lane: a leaver loses Salesforce access within seconds.

Events are hints (shared/events.py): each task re-reads the user from Graph, decides from what Graph says *now*,
and acts; so duplicates, late and reordered events are harmless (level-triggered processing:
docs/decisions.md#events-are-hints).

Revoking = find the Salesforce user (stored link, then FederationIdentifier = UPN, then Username = UPN; a stored link
Salesforce answers 404 for is dropped and the user looked up again), **freeze** it at once (log-in blocked even if
deactivation is refused), then asks the mass-deprovisioning guard (`shared.deprovision_guard`, one Redis script call)
and **deactivates** it unless the guard holds it. A deactivation blocker (the last admin, a default owner...) leaves
the user frozen and opens a review item: a human must act, replaying would not help, so it is not a dead letter. The
revocation tombstone is written before any Salesforce call, so an older sync event cannot undo the revocation even
while it is in progress. Ownership transfer is a follow-up on the sync lane, never inline: it is slow and must not
delay the next leaver. Revocation tasks never check the sync pause.

A user the guard holds (a mass deprovisioning: a scope mistake, or a reconcile run over the limits) stays frozen and
active, with no ownership transfer, until `idsync approve RUN_ID` publishes `revocation.release_held` for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import shared_task

from shared import deactivation_retries
from shared.audit import audit
from shared.deprovision_guard import APPROVED, HELD, REJECTED_REASON, LiveCheck
from shared.deprovision_guard import REVIEW_TOPIC as GUARD_REVIEW_TOPIC
from shared.dispatch import PendingWork, publish, sync_task_for
from shared.entra_status import (  # noqa: F401 - re-exported: the sync lane imports these from here
    DISABLED,
    ENABLED,
    GRAPH_SELECT,
    HARD_DELETED,
    SOFT_DELETED,
    EntraState,
    read_entra_user,
)
from shared.errors import NotFound, PermanentError
from shared.events import EventKind, IdentityEvent
from shared.identity_links import IdentityLinks, Link
from shared.logging import get_logger
from shared.offboarding.blockers import DEACTIVATION_BLOCKER_CODES, describe_blocker
from shared.offboarding.leave_of_absence import on_leave_of_absence
from shared.offboarding.mapping_access import current_mapping
from workers.base import IdentityTask
from workers.guests import follow_up_removal

log = get_logger("idsync.revocation")
T = TypeVar("T")

#: Salesforce error codes meaning "this user cannot be deactivated until someone changes org data".
DEACTIVATION_BLOCKERS = DEACTIVATION_BLOCKER_CODES
#: Review items about a blocked deactivation are kept under this topic (`IdentityLinks.add_review`).
DEACTIVATION_TOPIC = "deactivation"
#: The outcome for a disabled user on leave of absence: frozen, still active, nothing reassigned.
FROZEN_ON_LEAVE = "frozen_leave_of_absence"
#: Entra status of a user the mapping no longer covers (enabled in Entra, out of scope): deprovisioned as a leaver.
OUT_OF_SCOPE = "out_of_scope"
#: The outcome for a user the mass-deprovisioning guard holds: frozen, still active, nothing reassigned yet.
FROZEN_HELD = "frozen_held"
#: The outcome for a user whose held deactivation an operator rejected: frozen, still active, a review item says so.
FROZEN_REJECTED = "frozen_rejected"
#: Outcomes that leave the Salesforce user frozen but active, and publish no ownership transfer.
_KEPT_ACTIVE = frozenset({FROZEN_ON_LEAVE, FROZEN_HELD, FROZEN_REJECTED})
#: Outcomes after which the Salesforce user is still active (a blocked deactivation gets its transfer all the same).
_STILL_ACTIVE = _KEPT_ACTIVE | {"frozen_blocked"}


@dataclass(frozen=True)
class SalesforceUser:
    id: str
    is_active: bool | None  # None: found by stored link only, state not read


def find_salesforce_user(sf: Any, link: Link | None, entra_id: str, upn: str | None) -> SalesforceUser | None:
    """Stored link first (survives renames and hard deletes), then FederationIdentifier, then Username. The caller
    reads the link (it usually needs it too: one Redis read, not two)."""
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
    cid: str | None,
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
    found = find_salesforce_user(sf, links.get_link(entra_id), entra_id, upn)
    if found is not None and found.id == user.id:
        raise refused
    log.warning("stale_identity_link_dropped", entra_id=entra_id, stale_sf_user_id=user.id,
                found_sf_user_id=found.id if found else None)
    audit(redis, "relink", entra_id, found.id if found else None, "stale_link_dropped", cid,
          stale_sf_user_id=user.id, error=str(refused))
    if found is None:
        return None, None
    links.set_link(entra_id, found.id, upn)
    return found, act(found)


def revoke(task: IdentityTask, event: IdentityEvent, state: EntraState, rule: str | None = None, *,
           follow_up: bool = True) -> str:
    """The one revocation path (check_user, revoke_user, deprovision_user and retry_deactivation end here);
    returns the outcome.

    `rule` names the policy for the audit trail when it is more than the Entra account state (e.g. the scope rule
    a user left). `follow_up`: publish the ownership transfer afterwards (a scheduled deactivation retry publishes
    it only once the deactivation went through)."""
    ctx = task.ctx
    policy = rule or _rule(state)
    links, redis, entra_id, cid = ctx.links, ctx.redis, event.object_id, event.correlation_id
    links.set_tombstone(entra_id, event.observed_at.timestamp())
    sf = ctx.salesforce(task.lane)
    link = links.get_link(entra_id)
    user = find_salesforce_user(sf, link, entra_id, state.upn)
    upn = state.upn or (link.upn if link else None)  # a hard-deleted user's UPN lives on in the link only
    if user is None:
        audit(redis, "revoke", entra_id, None, "no_salesforce_user", cid, entra_status=state.status, upn=upn,
              rule=policy, source_event=event.id)
        return "no_salesforce_user"
    links.set_link(entra_id, user.id, state.upn)

    def freeze_and_deactivate(found: SalesforceUser) -> str:
        if found.is_active is False:
            return "already_revoked"
        login = sf.get_user_login(found.id)
        if login is not None and not login.get("IsFrozen"):
            sf.freeze_user(found.id, login)
            audit(redis, "freeze", entra_id, found.id, "done", cid, upn=upn, before={"IsFrozen": False},
                  after={"IsFrozen": True}, rule=policy, source_event=event.id)
        # Decided after the freeze, so the leave-of-absence lookup (a Graph call) never delays the log-in block.
        if leave_of_absence(task, entra_id, state):
            return FROZEN_ON_LEAVE
        # The guard too: a held user is frozen already, only the deactivation waits.
        check = ctx.guard.check_deactivation(entra_id, found.id, upn, policy)
        if check.holds:
            return _held(task, event, check, found.id, upn)
        outcome = _deactivate(task, event, sf, found.id, upn)
        if check.decision == APPROVED and outcome == "revoked":
            ctx.guard.approval_used(entra_id)
        return outcome

    acted_on, result = relink_on_not_found(sf, links, redis, entra_id, state.upn, cid, user, freeze_and_deactivate)
    if acted_on is None or result is None:
        audit(redis, "revoke", entra_id, None, "no_salesforce_user", cid, entra_status=state.status, upn=upn,
              rule=policy, source_event=event.id)
        return "no_salesforce_user"
    user, outcome = acted_on, result

    # observed_at: when a producer first saw the change; revocation latency = this record's ts - observed_at.
    audit(redis, "revoke", entra_id, user.id, outcome, cid, entra_status=state.status,
          observed_at=event.observed_at.timestamp(), upn=upn, rule=policy, source_event=event.id,
          before={"IsActive": user.is_active}, after={"IsActive": outcome in _STILL_ACTIVE})
    if follow_up and outcome not in _KEPT_ACTIVE:
        publish(task.app, event.follow_up(EventKind.OWNERSHIP_TRANSFER))
    return outcome


def _held(task: IdentityTask, event: IdentityEvent, check: LiveCheck, sf_user_id: str, upn: str | None) -> str:
    """The guard keeps this user active (frozen): held in a run waiting for a decision, or a rejected hold still in
    force, which a review item explains (a person rejected it; only a person changes that)."""
    if check.decision == HELD:
        return FROZEN_HELD
    entra_id = event.object_id
    task.ctx.links.add_review(
        entra_id, sf_user_id, REJECTED_REASON,
        f"frozen (cannot log in) but not deactivated: an operator rejected the held deactivations of run "
        f"{check.run_id}, and Entra still shows this user disabled, deleted or out of scope",
        upn=upn, code="GUARD_REJECTED", correlation_id=event.correlation_id, topic=GUARD_REVIEW_TOPIC,
        fix="if the scope is still wrong, fix it in Entra or the mapping: the user is unfrozen once back in scope; "
            "if the user really left, `idsync review resolve ID --retry` deactivates them",
        extra={"run_id": check.run_id})
    return FROZEN_REJECTED


def _rule(state: EntraState) -> str:
    """The policy that made idsync revoke, for the audit trail: the Entra account state that requires it."""
    return f"leaver:entra_{state.status}"


def _deactivate(task: IdentityTask, event: IdentityEvent, sf: Any, sf_user_id: str, upn: str | None) -> str:
    """Deactivate; a blocker leaves the user frozen, opens (or updates) a review item naming the blocker and its
    fix, and schedules a retry. Success closes an open blocker item."""
    ctx = task.ctx
    links, redis, entra_id, cid = ctx.links, ctx.redis, event.object_id, event.correlation_id
    try:
        sf.deactivate_user(sf_user_id)
    except PermanentError as exc:
        if exc.code not in DEACTIVATION_BLOCKERS:
            raise
        blocker = describe_blocker(exc.code, exc.message)
        detail = (f"frozen (cannot log in) but not deactivated: {blocker.describe()} Salesforce said: {exc.code}: "
                  f"{exc.message}. idsync retries every {ctx.settings.deactivation_retry_s / 60:g} min, or now with "
                  "`idsync review resolve ID --retry`")
        links.add_review(entra_id, sf_user_id, "deactivation_blocked", detail, upn=upn, code=exc.code,
                         correlation_id=cid, topic=DEACTIVATION_TOPIC, fix=blocker.fix,
                         extra={"blocker": blocker.kind})
        audit(redis, "deactivate", entra_id, sf_user_id, "blocked", cid, code=exc.code, reason=exc.message,
              upn=upn, blocker=blocker.kind)
        deactivation_retries.schedule(redis, event, ctx.settings.deactivation_retry_s)
        return "frozen_blocked"
    audit(redis, "deactivate", entra_id, sf_user_id, "done", cid, upn=upn, before={"IsActive": True},
          after={"IsActive": False})
    if links.resolve_review(entra_id, DEACTIVATION_TOPIC) or _resolve_legacy_blocker(links, entra_id):
        audit(redis, "review_resolved", entra_id, sf_user_id, "deactivated", cid, upn=upn, topic=DEACTIVATION_TOPIC)
    return "revoked"


def _resolve_legacy_blocker(links: IdentityLinks, entra_id: str) -> bool:
    """An item a version without review topics stored under the bare Entra id."""
    item = links.review(entra_id, None)
    return item is not None and item.get("reason") == "deactivation_blocked" and links.resolve_review(entra_id)


def leave_of_absence(task: IdentityTask, entra_id: str, state: EntraState) -> bool:
    """Leave-of-absence hook: a disabled member of a configured group is frozen only (no deactivation, no
    ownership transfer). Costs one Graph call, and only when the mapping names such groups."""
    if state.status != DISABLED:
        return False
    mapping = current_mapping(task.ctx.settings)
    return on_leave_of_absence(task.ctx.graph(task.lane), entra_id, state.status, mapping)


def hand_to_sync(task: IdentityTask, event: IdentityEvent, user_type: str | None = None) -> str:
    """The user is enabled and present: nothing to revoke; the sync lane reconciles (same correlation id): a member
    goes to the sync backlog, a B2B guest to their CRM Contact (`shared.dispatch.sync_task_for`)."""
    publish(task.app, event.follow_up(EventKind.USER_CHANGED), sync_task_for(user_type),
            pending=PendingWork(task.ctx.redis))
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


@shared_task(base=IdentityTask, bind=True, name="revocation.deprovision_user")
def deprovision_user(self: IdentityTask, event: dict[str, Any]) -> str:
    """The sync lane planned this linked user out of scope (e.g. removed from the scope group)."""
    return deprovision(self, event)


@shared_task(base=IdentityTask, bind=True, name="revocation.release_held")
def release_held(self: IdentityTask, event: dict[str, Any]) -> str:
    """`idsync approve RUN_ID` lifted the guard's hold on this user. The approval only lets the guard through; what
    happens is decided by Graph now, as for any deprovisioning: disabled, deleted or still out of scope -> deactivated
    (and the ownership transfer follows); enabled and in scope again -> handed to the sync lane, left active."""
    return deprovision(self, event)


def deprovision(task: IdentityTask, event: dict[str, Any]) -> str:
    """Before anything is deactivated, scope is checked again against Graph itself (the user and their transitive
    groups, live), so a stale group snapshot can never deprovision someone who is still in scope; such a user goes
    back to the sync lane, with the mapped groups read again."""
    from shared.engine import Catalog, EntraUser, desired_user, graph_properties
    from shared.group_membership import GroupMembership
    from shared.offboarding.scope import mark_left_scope
    from shared.provisioning.entra_reader import resolve_groups
    from shared.provisioning.mapping_store import NoMapping

    evt = IdentityEvent.from_message(event)
    ctx = task.ctx
    PendingWork(ctx.redis).clear(task.name, evt.object_id)
    graph = ctx.graph(task.lane)
    try:
        mapping = ctx.mappings.current()
    except NoMapping:
        return revoke_or_hand_off(task, event)  # no scope to judge without a mapping: only disabled users go
    user_json = graph.get_user(evt.object_id, select=graph_properties(mapping))
    if user_json is None or user_json.get("accountEnabled") is False:
        return revoke(task, evt, read_entra_user(graph, evt.object_id))
    groups = resolve_groups(graph, ctx.redis, mapping)
    member_of = graph.transitive_group_ids_of(evt.object_id) & set(groups.ids)
    entra = EntraUser.from_graph(user_json, [{"id": g, "displayName": groups.names[g]} for g in member_of])
    desired = desired_user(entra, mapping, Catalog(), None)
    if desired.in_scope:
        log.warning("deprovision_refused_still_in_scope", entra_id=evt.object_id)
        audit(ctx.redis, "revoke", evt.object_id, None, "still_in_scope", evt.correlation_id,
              upn=entra.upn, rule=desired.reason, source_event=evt.id)
        refusals_key = f"idsync:deprovision_refused:{evt.object_id}"
        refusals = int(ctx.redis.incr(refusals_key))
        ctx.redis.expire(refusals_key, 600)
        if refusals > 2:
            # Graph's group lists keep disagreeing with each other (replication lag can do that for a while):
            # stop the ping-pong between the lanes and let a person look; the user stays as they are.
            ctx.links.add_review(evt.object_id, None, "provisioning",
                                 f"{entra.upn}: planned out of scope, but Graph says in scope ({desired.reason}); "
                                 "left unchanged", upn=entra.upn, code="SCOPE_DISAGREEMENT", topic="sync:scope")
            return "still_in_scope"
        snapshots = GroupMembership(ctx.redis)
        for group_id in groups.ids:
            snapshots.refresh(graph, group_id)
        return hand_to_sync(task, evt)
    # the ownership transfer re-reads Graph, sees an enabled user and would keep their records: mark them a leaver
    mark_left_scope(ctx.redis, evt.object_id)
    return revoke(task, evt, EntraState(OUT_OF_SCOPE, entra.upn), rule=f"leaver: {desired.reason}")
