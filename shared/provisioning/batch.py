"""`sync_users`: the one path from "these Entra users may have changed" to Salesforce, for a batch of up to 200.

Used by the sync lane's drain task, by `idsync sync-user` (a batch of one, `--dry-run` included) and by
reconciliation. Steps, each for the whole batch at once:
1. the mapping (hot-reloaded) and its groups, resolved to ids, with their member snapshots ready;
2. users whose revocation is newer than their hint are skipped (a stale hint must not undo a leaver);
3. Entra, read 15 users per Graph request: gone or disabled users go to the revocation lane;
4. Salesforce state and matching, one composite call in steady state (`state_reader`);
5. THE engine, `plan(...)`, per user — nothing else decides what a user gets;
6. users idsync revoked who are back in scope are reactivated first (`reactivation`);
7. the executor writes creates, updates and entitlements through sObject Collections (`executor`);
8. out-of-scope users go to the revocation lane; review items are opened (and closed once a plan no longer raises
   them); reports waiting for a manager are re-planned as soon as that manager is linked (late binding).
Everything idsync does is audited (one pipelined write per phase) and what it granted is recorded (`shared.grants`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.audit import append_many
from shared.audit_events import AuditEvent
from shared.delta_keys import users_enumerated
from shared.dirty_users import Claimed, DirtyUsers
from shared.dispatch import TaskSender, publish
from shared.engine import (
    Change,
    ChangeKind,
    EntraUser,
    MatchOutcome,
    Plan,
    PlanAction,
    ReviewCode,
    ReviewItem,
    SalesforceUserState,
    nickname_for,
    plan,
    username_candidates,
)
from shared.events import EventKind, EventSource, IdentityEvent
from shared.grants import Grants
from shared.group_membership import GroupMembership
from shared.identity_links import IdentityLinks
from shared.logging import get_logger
from shared.mapping import Mapping
from shared.provisioning.catalog_reader import CatalogCache
from shared.provisioning.entra_reader import EntraReader, MappedGroups, resolve_groups
from shared.provisioning.executor import Executor, Failure, UserResult
from shared.provisioning.mapping_store import MappingStore
from shared.provisioning.reactivation import reactivate_revoked
from shared.provisioning.review_decisions import ReviewDecisions
from shared.provisioning.state_reader import StateReader, UserContext
from shared.redis_lock import RedisLock
from shared.salesforce_bulk import BulkIngest

log = get_logger("idsync.provisioning")

WAITING_PREFIX = "idsync:sync:waiting_for_manager"  # set per manager's Entra id: reports to plan once linked
#: Review topics the sync lane raises (and closes once a plan no longer raises them) all start with this.
SYNC_TOPIC = "sync:"
LICENCE_BLOCKED_KEY = "idsync:sync:licence_blocked"  # zset: users waiting for a free seat (beat retries them)

_UNKNOWN_NAMES = frozenset({ReviewCode.UNKNOWN_PROFILE, ReviewCode.UNKNOWN_ROLE, ReviewCode.UNKNOWN_PERMISSION_SET,
                            ReviewCode.UNKNOWN_PERMISSION_SET_GROUP, ReviewCode.UNKNOWN_PERMISSION_SET_LICENSE,
                            ReviewCode.UNKNOWN_PUBLIC_GROUP, ReviewCode.UNKNOWN_QUEUE})
_AUDIT_ACTION = {
    ChangeKind.CREATE_USER: "provision",
    ChangeKind.UPDATE_FIELD: "field_update",
    ChangeKind.SET_PROFILE: "field_update",
    ChangeKind.SET_ROLE: "field_update",
    ChangeKind.LINK: "link",
}


@dataclass
class SyncDeps:
    """What a batch needs; built once per process (worker context, CLI)."""

    settings: Any
    redis: Any
    graph: Any
    sf: Any
    mappings: MappingStore
    catalogs: CatalogCache
    sender: TaskSender | None = None  # the Celery app: hand-offs to the revocation lane go through dispatch


@dataclass
class BatchReport:
    plans: dict[str, Plan] = field(default_factory=dict)
    results: dict[str, UserResult] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # entra id -> what happened, one word
    retry: list[str] = field(default_factory=list)  # back to the backlog (a transient Salesforce error)
    sf_calls: int = 0
    write_calls: int = 0  # executor calls (collections writes)
    graph_users: int = 0

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts


class AuditRecorder:
    """Records progress as the executor makes it: links, grants, reviews, and the audit trail (pipelined)."""

    def __init__(self, deps: SyncDeps, links: IdentityLinks, grants: Grants, backlog: DirtyUsers,
                 correlation_ids: dict[str, str], observed: dict[str, float], decisions: ReviewDecisions) -> None:
        self.deps = deps
        self.links = links
        self.grants = grants
        self.backlog = backlog
        self.correlation_ids = correlation_ids
        self.observed = observed
        self.events: list[AuditEvent] = []
        self.raised: dict[str, set[str]] = {}  # entra id -> review topics raised by this batch
        self.decisions = decisions

    def _event(self, action: str, outcome: str, plan_: Plan, sf_user_id: str | None, change: Change | None,
               **detail: Any) -> None:
        before = {change.target: change.before} if change is not None and change.before is not None else None
        after_value = change.after if change is not None else None
        after: dict[str, Any] | None
        if change is not None and change.kind is ChangeKind.CREATE_USER:
            after = dict(change.after)
        else:
            after = {change.target: after_value} if change is not None and after_value is not None else None
        self.events.append(AuditEvent.build(
            action, outcome, observed_at=self.observed.get(plan_.entra_id),
            entra_id=plan_.entra_id, sf_user_id=sf_user_id, upn=plan_.upn, before=before, after=after,
            rule=change.rule if change is not None else plan_.reason,
            correlation_id=self.correlation_ids.get(plan_.entra_id),
            detail={"change": change.kind.value, "target": change.target, **detail} if change is not None
            else detail))

    def linked(self, plan_: Plan, sf_user_id: str, change: Change | None) -> None:
        self.links.set_link(plan_.entra_id, sf_user_id, plan_.upn)
        if change is not None:
            self._event("link", "done", plan_, sf_user_id, change)
        waiting = self.deps.redis.smembers(f"{WAITING_PREFIX}:{plan_.entra_id}")
        if waiting:
            # late binding: the reports planned while this manager was not provisioned yet get their ManagerId now
            self.backlog.mark(sorted(str(w) for w in waiting))
            self.deps.redis.delete(f"{WAITING_PREFIX}:{plan_.entra_id}")

    def applied(self, plan_: Plan, sf_user_id: str, change: Change) -> None:
        if change.grants or change.revokes:
            self.grants.record(plan_.entra_id, change.grants, change.revokes)
        if change.kind is ChangeKind.LINK:
            return  # audited by `linked`
        action = _AUDIT_ACTION.get(change.kind) or (
            "entitlement_add" if change.kind.value.startswith("add_") else "entitlement_remove")
        self._event(action, "done", plan_, sf_user_id, change)

    def failed(self, plan_: Plan, sf_user_id: str | None, failure: Failure) -> None:
        change = failure.change
        self._event(_AUDIT_ACTION.get(change.kind, "entitlement_add" if change.kind.value.startswith("add_")
                                      else "entitlement_remove"),
                    "failed", plan_, sf_user_id, change, code=failure.code, error=failure.message[:500])
        if failure.transient:
            return
        where = _where_of(change, failure.fields)
        target = ",".join(failure.fields) or change.target
        what = f"Salesforce refused {change.kind.value.replace('_', ' ')} {change.target}"
        message = f"{plan_.upn}: {what}: {failure.code}: {failure.message}"
        if where:
            message += f" (mapping: {where})"
        topic = f"{SYNC_TOPIC}licence" if failure.licence else f"{SYNC_TOPIC}salesforce:{change.kind.value}:{target}"
        if self.decisions.ignored(plan_.entra_id, topic):
            return
        if failure.licence:
            message += "; retried automatically when a seat is free"
            self.deps.redis.zadd(LICENCE_BLOCKED_KEY, {plan_.entra_id: time.time()})
        self.links.add_review(plan_.entra_id, sf_user_id, "provisioning", message, upn=plan_.upn, code=failure.code,
                              correlation_id=self.correlation_ids.get(plan_.entra_id), topic=topic, where=where)
        self.raised.setdefault(plan_.entra_id, set()).add(topic)

    def review(self, item: ReviewItem, sf_user_id: str | None) -> None:
        topic = f"{SYNC_TOPIC}{item.code.value}:{item.target}"
        if self.decisions.ignored(item.entra_id, topic):
            return
        self.links.add_review(item.entra_id, sf_user_id, "provisioning" if item.code.value != "match" else "match",
                              item.message, upn=item.upn, code=item.code.value,
                              correlation_id=self.correlation_ids.get(item.entra_id), topic=topic, where=item.where,
                              candidates=list(item.candidates) or None)
        self.raised.setdefault(item.entra_id, set()).add(topic)

    def flush(self) -> None:
        events, self.events = self.events, []
        append_many(self.deps.redis, events)


def _where_of(change: Change, fields: Iterable[str]) -> str | None:
    """The mapping line behind a refused field: the rule text of the field, else of the change."""
    rules = dict(change.field_rules or {})
    for name in fields:
        if name in rules:
            return rules[name]
    return change.rule or None


def _hand_off(deps: SyncDeps, kind: EventKind, entra_id: str, observed_at: float, correlation_id: str | None) -> None:
    if deps.sender is None:
        return
    event = IdentityEvent(kind=kind, source=EventSource.WORKER, tenant=deps.settings.graph_tenant_id or "default",
                          object_id=entra_id, observed_at=datetime.fromtimestamp(observed_at, UTC),
                          **({"correlation_id": correlation_id} if correlation_id else {}))
    publish(deps.sender, event)


def prepare_groups(deps: SyncDeps, mapping: Mapping, snapshots: GroupMembership, backlog: DirtyUsers,
                   exclude: set[str]) -> MappedGroups:
    """Resolve the mapping's groups and read any snapshot never read; its members are planned (joiners)."""
    groups = resolve_groups(deps.graph, deps.redis, mapping)
    # Who joined a group read for the first time? With IDSYNC_DELTA_START_FROM_NOW (the default) the first reads of
    # a first start only set the baseline: the tenant as it stands is for a reconciliation (a plan before any write);
    # a group mapped later is read against that baseline and its members are planned. Without it, the poller's first
    # full round hints every user itself, and the members are marked once that round has reached the queue.
    first_reads = sorted(snapshots.not_ready(groups.ids))
    plan_members = False
    if first_reads:  # otherwise (every batch but the first few) nothing below runs: no Redis calls for it
        if deps.settings.delta_start_from_now:
            plan_members = snapshots.baseline_established()
        else:
            plan_members = users_enumerated(deps.redis, deps.settings)
    for group_id in first_reads:
        # One worker reads a group for the first time; the others wait for it: two first reads would each plan
        # every member again (and the second would re-plan users the first batches already provisioned).
        with RedisLock(deps.redis, f"idsync:gm:first_read:{group_id}", 120_000).held(60):
            if not snapshots.not_ready([group_id]):
                continue  # another worker read it while this one waited
            changed = snapshots.refresh(deps.graph, group_id)
            if plan_members:
                # everyone in a group read for the first time is planned, except the users batches are planning
                # right now (their plans use this snapshot or one their worker just read). While the poller's
                # first full round is still running it hints every user anyway: marking them here too would
                # re-plan (as no-ops) the users it has already hinted and provisioned.
                backlog.mark(sorted(changed - exclude - backlog.in_flight_ids()))
        log.info("group_snapshot_read", group_id=group_id, group=groups.names.get(group_id), members=len(changed),
                 planned=plan_members)
    if first_reads:
        snapshots.establish_baseline()
    if groups.unresolved:
        log.warning("mapping_groups_unresolved", groups=list(groups.unresolved))
    return groups


def sync_users(
    deps: SyncDeps,
    users: Iterable[Claimed | str],
    *,
    dry_run: bool = False,
    correlation_ids: dict[str, str] | None = None,
) -> BatchReport:
    """Plan (and unless `dry_run`, apply) a batch; see the module docstring. Raises `NoMapping` without a mapping,
    and the clients' errors for whole-batch failures (the caller puts the users back in the backlog)."""
    claimed = [u if isinstance(u, Claimed) else Claimed(u, time.time()) for u in users]
    observed = {c.entra_id: c.observed_at for c in claimed}
    cids = dict(correlation_ids or {})
    report = BatchReport()
    mapping = deps.mappings.current()
    redis = deps.redis
    links, grants, backlog = IdentityLinks(redis), Grants(redis), DirtyUsers(redis)
    snapshots = GroupMembership(redis)
    ids = list(observed)
    groups = prepare_groups(deps, mapping, snapshots, backlog, set(ids))

    # 2. hints older than a revocation
    pipe = redis.pipeline(transaction=False)
    for entra_id in ids:
        pipe.get(f"idsync:tombstone:{entra_id}")
    tombstones = {e: float(t) for e, t in zip(ids, pipe.execute(), strict=True) if t is not None}
    live_ids = [e for e in ids if not (e in tombstones and tombstones[e] > observed[e])]
    for entra_id in set(ids) - set(live_ids):
        report.outcomes[entra_id] = "skipped_tombstone"

    # 3. Entra
    entra = EntraReader(deps.graph, snapshots).read(live_ids, mapping, groups)
    report.graph_users = len(live_ids)
    present: list[EntraUser] = []
    stored = links.links_of(live_ids)
    for entra_id, user in entra.items():
        if user is not None and user.enabled:
            present.append(user)
            continue
        link = stored.get(entra_id)
        if user is None and not (link and link.sf_user_id):
            report.outcomes[entra_id] = "not_in_entra"
            continue
        kind = EventKind.USER_HARD_DELETED if user is None else EventKind.USER_DISABLED
        if not dry_run:
            _hand_off(deps, kind, entra_id, observed[entra_id], cids.get(entra_id))
        report.outcomes[entra_id] = "handed_to_revocation"

    # 4. Salesforce
    catalog = deps.catalogs.get(deps.sf)
    reader = StateReader(deps.sf, links, grants)
    batch = reader.read(present, mapping, catalog.permission_set_names)

    plan_and_apply(deps, mapping, catalog, batch.users, report, observed=observed, tombstones=tombstones,
                   correlation_ids=cids, dry_run=dry_run)
    report.sf_calls = reader.calls + report.write_calls
    return report


def _bulk_ingest(deps: SyncDeps, on_wait: Callable[[], None] | None) -> BulkIngest | None:
    """A Bulk API 2.0 ingest client for the executor, when the client can carry CSV (the real one can)."""
    if not getattr(deps.settings, "bulk_write_threshold", 0) or not hasattr(deps.sf, "request_text"):
        return None
    return BulkIngest(deps.sf, on_wait=on_wait)


def plan_and_apply(
    deps: SyncDeps,
    mapping: Mapping,
    catalog: Any,
    contexts: dict[str, UserContext],
    report: BatchReport,
    *,
    observed: dict[str, float],
    tombstones: dict[str, float],
    correlation_ids: dict[str, str],
    dry_run: bool = False,
    deprovision: Callable[[Plan], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> BatchReport:
    """Steps 5 to 8 for users whose Entra and Salesforce state is already read (`contexts`): plan each with THE
    engine, reactivate, write through the executor, route leavers and keep review items. `sync_users` reads a batch
    and calls this; reconciliation reads the whole tenant in pages and calls this per chunk, so both lanes' writes
    take exactly one path. `deprovision` receives the plans that take a linked user out of scope instead of handing
    them to the revocation lane at once (reconciliation passes them through the mass-deprovisioning guard first).
    `on_wait` runs while a Bulk API job is polled (a reconciliation renews its run lock there)."""
    redis = deps.redis
    links, grants, backlog = IdentityLinks(redis), Grants(redis), DirtyUsers(redis)
    decisions = ReviewDecisions(redis)
    cids = correlation_ids

    # 5. the engine (an admin's `review resolve --create` overrides matching for that user)
    forced = decisions.forced(list(contexts))
    for entra_id, ctx in contexts.items():
        if entra_id in forced and ctx.match is not None and ctx.match.kind == "review":
            ctx.match = MatchOutcome.create()
        report.plans[entra_id] = plan(ctx.entra, mapping, ctx.state, catalog, ctx.match)
    if any(r.code in _UNKNOWN_NAMES for p in report.plans.values() for r in p.reviews):
        deps.catalogs.mark_stale()
    if dry_run:
        for entra_id, p in report.plans.items():
            report.outcomes[entra_id] = p.action.value
        return report

    recorder = AuditRecorder(deps, links, grants, backlog, cids, observed, decisions)
    executor = Executor(deps.sf, recorder, bulk=_bulk_ingest(deps, on_wait),
                        bulk_threshold=int(getattr(deps.settings, "bulk_write_threshold", 0) or 0))
    try:
        # 6. reactivate what idsync revoked, when the user is wanted again
        for entra_id, p in list(report.plans.items()):
            ctx = contexts[entra_id]
            outcome = _reactivate_if_wanted(deps, links, ctx, p, tombstones.get(entra_id), observed[entra_id],
                                            cids.get(entra_id), recorder)
            if outcome in ("skipped_tombstone", "handed_to_revocation"):
                del report.plans[entra_id]
                report.outcomes[entra_id] = outcome

        # 7. write
        results = executor.apply(
            list(report.plans.values()),
            {e: username_candidates(contexts[e].entra, mapping) for e, p in report.plans.items()
             if p.action is PlanAction.CREATE},
            {e: f"{nickname_for(contexts[e].entra)[:35]}.{int(time.time()) % 10000:04d}"
             for e, p in report.plans.items() if p.action is PlanAction.CREATE},
        )
        report.results = results
        _bind_managers_linked_together(deps, executor, mapping, catalog, contexts, report)

        # 8. routing, reviews, late binding
        for entra_id, p in report.plans.items():
            result = results[entra_id]
            sf_user_id = result.sf_user_id
            if p.action is PlanAction.DEPROVISION:
                if deprovision is not None:
                    deprovision(p)
                else:
                    _hand_off(deps, EventKind.USER_OUT_OF_SCOPE, entra_id, observed[entra_id], cids.get(entra_id))
            for item in p.reviews:
                recorder.review(item, sf_user_id)
            if result.retry:
                report.retry.append(entra_id)
            report.outcomes[entra_id] = _outcome(p, result)
            if p.waiting_for_manager:
                _wait_for_manager(redis, links, backlog, entra_id, p.waiting_for_manager)
            if not result.retry:
                _close_resolved_reviews(links, entra_id, recorder.raised.get(entra_id, set()), p)
            if not result.licence_blocked:
                redis.zrem(LICENCE_BLOCKED_KEY, entra_id)
            if result.created:
                decisions.created(entra_id)
    finally:
        recorder.flush()
        report.write_calls += executor.calls
    return report


def _reactivate_if_wanted(deps: SyncDeps, links: IdentityLinks, ctx: UserContext, p: Plan, tombstone: float | None,
                          observed_at: float, correlation_id: str | None, recorder: AuditRecorder) -> str | None:
    """Users idsync revoked come back on when their plan keeps them (in scope, enabled); others are left alone,
    and an inactive user idsync did not revoke gets a review item instead (someone switched them off in Salesforce)."""
    user = ctx.state.user
    if user is None or p.action not in (PlanAction.UPDATE, PlanAction.NOOP) or not p.in_scope:
        return None  # out of scope (already inactive): a leaver idsync deprovisioned stays off
    inactive = user.get("IsActive") is False
    if tombstone is None:
        if inactive:
            links.add_review(p.entra_id, str(user["Id"]), "provisioning",
                             f"{p.upn}: enabled and in scope in Entra, but inactive in Salesforce, and idsync did not "
                             "deactivate them: activate the user in Salesforce (Setup > Users) if that is right",
                             upn=p.upn, code="INACTIVE_IN_SALESFORCE", topic=f"{SYNC_TOPIC}inactive",
                             correlation_id=correlation_id)
            recorder.raised.setdefault(p.entra_id, set()).add(f"{SYNC_TOPIC}inactive")
        return None

    def back_to_revocation() -> None:
        _hand_off(deps, EventKind.USER_DISABLED, p.entra_id, observed_at, correlation_id)

    return reactivate_revoked(deps.sf, links, deps.redis, entra_id=p.entra_id, upn=p.upn,
                              sf_user_id=str(user["Id"]), is_active=user.get("IsActive"), tombstone=tombstone,
                              correlation_id=correlation_id, source_event=None, observed_at=observed_at,
                              back_to_revocation=back_to_revocation)


def _bind_managers_linked_together(deps: SyncDeps, executor: Executor, mapping: Mapping, catalog: Any,
                                    contexts: dict[str, UserContext], report: BatchReport) -> None:
    """A user whose manager was created (or first linked) in the same batch is planned again at once, now that the
    manager has an id, against the state just written (no read): one more update call for the batch instead of a
    whole re-plan later."""
    ids = {e: r.sf_user_id for e, r in report.results.items()
           if r.sf_user_id and (r.created or any(c.kind is ChangeKind.LINK for c in r.applied))}
    again: list[Plan] = []
    for entra_id, p in report.plans.items():
        result = report.results[entra_id]
        manager = p.waiting_for_manager
        if not (manager and ids.get(manager) and result.sf_user_id and not result.failed):
            continue
        state = _state_after(contexts[entra_id].state, result, str(ids[manager]))
        again.append(plan(contexts[entra_id].entra, mapping, state, catalog, None))
    if not again:
        return
    for entra_id, result in executor.apply([p for p in again if p.changes]).items():
        report.results[entra_id].applied.extend(result.applied)
        report.results[entra_id].failed.extend(result.failed)
    for p in again:
        report.plans[p.entra_id] = replace(report.plans[p.entra_id], waiting_for_manager=p.waiting_for_manager)


_ASSIGNMENT_MAPS = {
    ChangeKind.ADD_PERMISSION_SET: "permission_sets", ChangeKind.REMOVE_PERMISSION_SET: "permission_sets",
    ChangeKind.ADD_PERMISSION_SET_GROUP: "permission_set_groups",
    ChangeKind.REMOVE_PERMISSION_SET_GROUP: "permission_set_groups",
    ChangeKind.ADD_LICENCE: "licences", ChangeKind.REMOVE_LICENCE: "licences",
    ChangeKind.ADD_GROUP: "groups", ChangeKind.REMOVE_GROUP: "groups",
    ChangeKind.ADD_QUEUE: "groups", ChangeKind.REMOVE_QUEUE: "groups",
}


def _state_after(before: SalesforceUserState, result: UserResult, manager_sf_id: str) -> SalesforceUserState:
    """What Salesforce holds for a user once the executor applied these changes: no need to read it back."""
    record: dict[str, Any] = dict(before.user or {})
    maps: dict[str, dict[str, str]] = {
        "permission_sets": dict(before.permission_sets), "permission_set_groups": dict(before.permission_set_groups),
        "licences": dict(before.licences), "groups": dict(before.groups)}
    granted = set(before.granted)
    for change in result.applied:
        if change.kind is ChangeKind.CREATE_USER:
            record.update(dict(change.after), Id=result.sf_user_id, IsActive=True)
        elif change.kind is ChangeKind.UPDATE_FIELD:
            record[change.target] = change.after
        elif change.kind is ChangeKind.SET_PROFILE:
            record["ProfileId"] = change.sf_id
        elif change.kind is ChangeKind.SET_ROLE:
            record["UserRoleId"] = change.sf_id
        elif change.kind in _ASSIGNMENT_MAPS and change.sf_id:
            target = maps[_ASSIGNMENT_MAPS[change.kind]]
            if change.kind.value.startswith("add_"):
                target[change.sf_id] = "new"
            else:
                target.pop(change.sf_id, None)
        granted.update(change.grants)
        granted.difference_update(change.revokes)
    return SalesforceUserState(user=record, granted=frozenset(granted), manager_sf_id=manager_sf_id, **maps)


def _outcome(p: Plan, result: UserResult) -> str:
    if result.retry:
        return "retry"
    if result.failed:
        return "review"
    if p.action is PlanAction.CREATE:
        return "created" if result.created else "review"
    if p.action is PlanAction.UPDATE:
        return "updated"
    return p.action.value


def _wait_for_manager(redis: Any, links: IdentityLinks, backlog: DirtyUsers, entra_id: str, manager_id: str) -> None:
    """Remember to plan this user again once the manager is linked; if that already happened meanwhile (another
    batch linked the manager while this one planned), plan again now."""
    redis.sadd(f"{WAITING_PREFIX}:{manager_id}", entra_id)
    link = links.get_link(manager_id)
    if link is not None and link.sf_user_id:
        redis.srem(f"{WAITING_PREFIX}:{manager_id}", entra_id)
        backlog.mark([entra_id])


def _close_resolved_reviews(links: IdentityLinks, entra_id: str, raised: set[str], p: Plan) -> None:
    """A provisioning review the latest plan no longer raises is resolved (the mapping or the data was fixed).
    Only the sync lane's own topics: a blocked deactivation or unplaced records are closed by their own work."""
    for topic in links.topics_of(entra_id) - raised:
        if not topic.startswith(SYNC_TOPIC) or topic in (f"{SYNC_TOPIC}internal", f"{SYNC_TOPIC}scope"):
            continue
        if topic == f"{SYNC_TOPIC}licence" and p.action is PlanAction.REVIEW:
            continue
        links.resolve_topic(entra_id, topic)
