"""The sync lane: joiners and movers in batches, group changes, and the follow-ups of revocations.

Every sync task first asks the limiter whether the sync lane is paused (Salesforce's daily allowance is nearly used
up and the rest is kept for revocations). When paused it parks itself for `SYNC_PAUSE_RECHECK_S` instead of calling
Salesforce; revocation tasks never ask.

- `sync.user_changed` / `sync.reactivate_user`: a hint about one user. It only marks the user dirty in the sync
  backlog (producers usually do that themselves through `shared.dispatch.publish`, without a message at all) and
  makes sure a drain is scheduled.
- `sync.drain_users`: claims up to 200 dirty users at a time and runs `shared.provisioning.batch.sync_users` (read,
  plan with THE engine, apply through collections) until the backlog is empty or its time budget is spent. A batch
  that fails as a whole goes back to the backlog; a batch that fails on a bug is split so one bad user cannot hold
  back the others (that user gets a review item).
- `sync.group_changed`: re-reads a mapped group's members (or a mapped group's, when a nested group changed) and
  marks who joined or left dirty.
- `sync.transfer_ownership` (workers/ownership_transfer.py): the leaver's open records get new owners.
Without a mapping file (a real tenant that has not configured joiners and movers) the lane still turns users idsync
revoked back on when Entra re-enables them (`_reactivation_only`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from shared.audit import audit
from shared.dirty_users import Claimed, DirtyUsers
from shared.dispatch import CONTACT_TASK, publish, schedule_drain
from shared.errors import RetryableError
from shared.events import EventKind, EventSource, IdentityEvent
from shared.limiter import SYNC_PAUSE_RECHECK_S
from shared.logging import get_logger
from shared.provisioning.batch import sync_users
from shared.provisioning.group_events import members_changed
from shared.provisioning.mapping_store import NoMapping
from workers.base import IdentityTask
from workers.revocation import SOFT_DELETED, find_salesforce_user, read_entra_user, relink_on_not_found

log = get_logger("idsync.sync")

_REVOCATION_KIND = {SOFT_DELETED: EventKind.USER_SOFT_DELETED}
#: Users per batch: one sObject Collections call takes 200 records.
BATCH_SIZE = 200
#: A drain works this long, then hands over to a fresh task (other sync work and restarts get their turn).
DRAIN_BUDGET_S = 20.0
#: A claimed user comes back to the backlog if its worker has not finished the batch by then (it died).
LEASE_S = 240.0
#: A drain that finds a small backlog waits while it is still growing (a burst of hints becomes full batches of 200,
#: each costing the same few Salesforce calls as a batch of one), checking every `COALESCE_STEP_S`, at most
#: `COALESCE_MAX_S` in all: a lone joiner waits one step.
COALESCE_STEP_S = 0.15
COALESCE_MAX_S = 2.0


def _wait_if_paused(task: IdentityTask) -> None:
    if task.ctx.limiter.sync_paused():
        task.defer(SYNC_PAUSE_RECHECK_S, "sync_paused")


def _tenant(task: IdentityTask) -> str:
    return str(task.ctx.settings.graph_tenant_id or "default")


def _worker_event(task: IdentityTask, kind: EventKind, entra_id: str, observed_at: float) -> IdentityEvent:
    """A follow-up about a user, carrying the observation time of the hint it comes from (tombstones compare it)."""
    return IdentityEvent(kind=kind, source=EventSource.WORKER, tenant=_tenant(task), object_id=entra_id,
                         observed_at=datetime.fromtimestamp(observed_at, UTC))


def mark_dirty(task: IdentityTask, message: dict[str, Any]) -> str:
    event = IdentityEvent.from_message(message)
    backlog = DirtyUsers(task.ctx.redis)
    backlog.mark([event.object_id], event.observed_at.timestamp())
    schedule_drain(task.app, backlog, event.tenant)
    return "queued"


@shared_task(base=IdentityTask, bind=True, name="sync.user_changed")
def user_changed(self: IdentityTask, event: dict[str, Any]) -> str:
    return mark_dirty(self, event)


@shared_task(base=IdentityTask, bind=True, name="sync.reactivate_user")
def reactivate_user(self: IdentityTask, event: dict[str, Any]) -> str:
    """Same as `user_changed`: Graph decides, when the batch reads it, whether the user is really enabled again."""
    return mark_dirty(self, event)


@shared_task(base=IdentityTask, bind=True, name="sync.drain_users")
def drain_users(self: IdentityTask, event: dict[str, Any]) -> str:
    _wait_if_paused(self)
    ctx = self.ctx
    backlog = DirtyUsers(ctx.redis)
    backlog.drain_started()
    deps = ctx.provisioning(self.lane, self.app)
    # hand over well before the task's time limit: a batch started late must still finish inside it
    budget = min(DRAIN_BUDGET_S, ctx.settings.task_time_limit_s / 3)
    deadline = time.monotonic() + budget
    batches = users = 0
    retry: list[str] = []
    while time.monotonic() < deadline:
        _coalesce(backlog)
        claimed = backlog.claim(BATCH_SIZE, LEASE_S)
        if not claimed:
            break
        batches += 1
        users += len(claimed)
        retry.extend(_run_batch(self, deps, backlog, claimed))
        if retry:
            break  # transient Salesforce errors: back off (the base task's retry) instead of spinning on them
    if retry:
        backlog.release(retry)
        raise RetryableError(f"transient Salesforce errors for {len(retry)} users", service="salesforce")
    if backlog.pending():
        schedule_drain(self.app, backlog, _tenant(self))
    log.info("sync_drain_done", batches=batches, users=users, pending=backlog.pending())
    return "drained"


def _coalesce(backlog: DirtyUsers) -> None:
    """Wait while a small backlog is still growing, so that a burst is claimed as full batches."""
    waited, seen = 0.0, backlog.pending()
    while seen < BATCH_SIZE and waited < COALESCE_MAX_S:
        time.sleep(COALESCE_STEP_S)
        waited += COALESCE_STEP_S
        now = backlog.pending()
        if now == seen:
            return
        seen = now


def _run_batch(task: IdentityTask, deps: Any, backlog: DirtyUsers, claimed: list[Claimed]) -> list[str]:
    """One batch; returns the users to retry later. Whole-batch failures put everyone back and propagate."""
    ids = [c.entra_id for c in claimed]
    try:
        report = sync_users(deps, claimed)
    except NoMapping:
        for c in claimed:
            _reactivation_only(task, c)
        backlog.ack(ids)
        return []
    except (RetryableError, SoftTimeLimitExceeded):
        # the whole batch could not finish (a service is throttling or down, or the batch ran out of time): put
        # everyone back and let the base task retry the drain with backoff
        backlog.release(ids)
        raise
    except Exception as err:
        if len(claimed) == 1:
            _poisoned(task, claimed[0], err)
            backlog.ack(ids)
            return []
        log.error("sync_batch_failed_splitting", users=len(claimed), error=type(err).__name__, detail=str(err)[:300])
        retry: list[str] = []
        for one in claimed:
            retry.extend(_run_batch(task, deps, backlog, [one]))
        return retry
    done = [e for e in ids if e not in set(report.retry)]
    backlog.ack(done)
    _contacts_follow(task, deps, done, report)
    log.info("sync_batch_done", users=len(ids), sf_calls=report.sf_calls, outcomes=report.count())
    return list(report.retry)


def _contacts_follow(task: IdentityTask, deps: Any, ids: list[str], report: Any) -> None:
    """Members whose Salesforce Contact mirrors their Entra data (enrichment) get their Contact refreshed too:
    those linked to a Contact or shown on a report's Contact, or every member with `enrichment.employees: true`."""
    from shared.events import EventSource
    from workers.guests import contact_follow_ups

    event = IdentityEvent(kind=EventKind.USER_CHANGED, source=EventSource.WORKER, tenant=_tenant(task),
                          object_id="batch")
    mapping = deps.mappings.current()
    present = [e for e in ids if e in report.plans]
    if mapping.enrichment is not None and mapping.enrichment.employees:
        for entra_id in present:
            publish(task.app, IdentityEvent(kind=EventKind.USER_CHANGED, source=EventSource.WORKER,
                                            tenant=event.tenant, object_id=entra_id), CONTACT_TASK)
        return
    contact_follow_ups(task.app, task.ctx.redis, event, present)


def _poisoned(task: IdentityTask, claimed: Claimed, err: Exception) -> None:
    """A user whose batch fails on an unexpected error: a review item says so, the others go on."""
    log.exception("sync_user_failed", entra_id=claimed.entra_id, error=type(err).__name__)
    task.ctx.links.add_review(claimed.entra_id, None, "provisioning",
                              f"planning or applying this user failed: {type(err).__name__}: {str(err)[:300]}; "
                              "fix the cause, then `idsync sync-user` this user", code="INTERNAL_ERROR",
                              topic="sync:internal")


def _reactivation_only(task: IdentityTask, claimed: Claimed) -> str:
    """No mapping: only undo idsync's own revocations when Entra re-enables a user (the leaver-only deployment).
    Each user's outcome is audited (`sync_user`)."""
    ctx = task.ctx
    links, redis, entra_id = ctx.links, ctx.redis, claimed.entra_id

    def done(outcome: str, sf_user_id: str | None = None, **detail: Any) -> str:
        audit(redis, "sync_user", entra_id, sf_user_id, outcome, None, observed_at=claimed.observed_at, **detail)
        return outcome

    tombstone = links.tombstone(entra_id)
    if tombstone is not None and tombstone > claimed.observed_at:
        return done("skipped_tombstone", tombstone=tombstone)
    state = read_entra_user(ctx.graph(task.lane), entra_id)
    if not state.enabled:
        publish(task.app, _worker_event(task, _REVOCATION_KIND.get(state.status, EventKind.USER_DISABLED), entra_id,
                                             claimed.observed_at))
        return done("handed_to_revocation", entra_status=state.status)
    if tombstone is None:
        # Only undo what idsync did: an inactive Salesforce user without our tombstone was switched off in
        # Salesforce (licences, an investigation); an enabled Entra account is no reason to turn them back on.
        return done("in_sync", reason="not_revoked_by_idsync")
    sf = ctx.salesforce(task.lane)
    user = find_salesforce_user(sf, links.get_link(entra_id), entra_id, state.upn)
    if user is None:
        return done("no_salesforce_user")
    links.set_link(entra_id, user.id, state.upn)
    from shared.provisioning.reactivation import reactivate_revoked

    def back_to_revocation() -> None:
        publish(task.app, _worker_event(task, EventKind.USER_DISABLED, entra_id, claimed.observed_at))

    def act(found: Any) -> str:
        return reactivate_revoked(sf, links, redis, entra_id=entra_id, upn=state.upn, sf_user_id=found.id,
                                  is_active=found.is_active, tombstone=tombstone, correlation_id=None,
                                  source_event=None, observed_at=claimed.observed_at,
                                  back_to_revocation=back_to_revocation)

    acted_on, outcome = relink_on_not_found(sf, links, redis, entra_id, state.upn, None, user, act)
    if acted_on is None:
        return done("no_salesforce_user")
    return outcome or "no_salesforce_user"


@shared_task(base=IdentityTask, bind=True, name="sync.group_changed")
def group_changed(self: IdentityTask, event: dict[str, Any]) -> str:
    """A group changed: if the mapping names it (or a group it is nested in), re-read that mapped group's members
    and mark whoever joined or left dirty; their batch plans them with THE engine."""
    _wait_if_paused(self)
    evt = IdentityEvent.from_message(event)
    ctx = self.ctx
    try:
        mapping = ctx.mappings.current()
    except NoMapping:
        audit(ctx.redis, "group_changed", None, None, "no_mapping", evt.correlation_id, group_id=evt.object_id)
        return "no_mapping"
    change = members_changed(ctx.graph(self.lane), ctx.redis, mapping, evt.object_id)
    if not change.mapped_groups:
        return "not_mapped"
    changed = change.users
    targets = list(change.mapped_groups)
    backlog = DirtyUsers(ctx.redis)
    backlog.mark(sorted(changed), evt.observed_at.timestamp())
    if changed:
        schedule_drain(self.app, backlog, evt.tenant)
    audit(ctx.redis, "group_changed", None, None, "members_marked", evt.correlation_id, group_id=evt.object_id,
          mapped_groups=targets, users=len(changed))
    return "members_marked"


# `sync.transfer_ownership` lives in workers/ownership_transfer.py (leavers in depth).
