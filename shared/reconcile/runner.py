"""One reconciliation run: read both sides in pages, plan every user with THE engine, write in chunks.

Phases (`Reconciler.run`):
1. groups: the mapping's groups resolved, each one's transitive members read (999 per page) into memory and, in a
   real run, into the live pipeline's snapshots (`shared.group_membership`);
2. salesforce: every User row and every entitlement, 2,000 rows per call (`salesforce_side`);
3. entra: every user, 999 per page with `$select` (and the manager expanded when the mapping maps one); each page
   is cut into chunks of `reconcile_chunk_size` (200) users, and each chunk is joined with the Salesforce side
   (stored link, else the engine's `match_user` over a `CandidateIndex` of every Salesforce user), planned with
   `plan`, recorded in the run's state, then written through `plan_and_apply` - the sync lane's own write path
   (the executor, the audit recorder, reactivation, review items) - only for the users whose plan needs it;
4. gone: linked users Entra no longer lists (deleted) are planned too, as leavers;
5. salesforce_only: Salesforce users no Entra user links to or matches: reported, never touched;
6. late managers: users planned before their manager existed in Salesforce are synced again now;
7. guard: the run's deactivations go to the mass-deprovisioning guard as one set (one decision per run), then every
   one to the revocation lane (`revocation.deprovision_user`: scope checked against Graph live again, the user
   frozen at once, deactivated only if the guard allows; a held run waits for `idsync approve RUN_ID`).
A dry run does 1-5 without writing anything anywhere (not even idsync's own state) and keeps its state in memory.

Memory: the Salesforce side is held (compact rows, see `salesforce_side`); Entra is streamed a page at a time; the
run's report rows live in Redis (a dry run: in memory). Calls: see docs/reconciliation.md, "What a run costs".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.audit import audit
from shared.deprovision_guard import DeprovisionGuard
from shared.dirty_users import DirtyUsers
from shared.dispatch import CONTACT_TASK, publish
from shared.engine import EntraUser, Plan, PlanAction, graph_properties, match_user
from shared.errors import NotFound
from shared.events import EventKind, EventSource, IdentityEvent
from shared.grants import Grants
from shared.group_membership import GroupMembership
from shared.guests.links import ContactLinks
from shared.identity_links import LINKS_BY_SF_KEY, REVIEWS_KEY, IdentityLinks
from shared.logging import get_logger
from shared.mapping import Mapping as IdsyncMapping
from shared.provisioning.batch import BatchReport, SyncDeps, plan_and_apply, sync_users
from shared.provisioning.entra_reader import MappedGroups, forget_group_ids, resolve_groups
from shared.provisioning.state_reader import UserContext, user_context
from shared.reconcile.drift import (
    ACTION_NAMES,
    change_rows,
    deprovision_row,
    inactive_rows,
    review_rows,
)
from shared.reconcile.run_state import RedisRunLog, RunLock, RunLog, new_run_id
from shared.reconcile.salesforce_side import SalesforceSide, query_reader, read_salesforce_side

log = get_logger("idsync.reconcile")

_NEEDS_WRITE_PATH = frozenset({PlanAction.CREATE, PlanAction.UPDATE, PlanAction.DEPROVISION, PlanAction.REVIEW})


class ReconcileError(Exception):
    """A run that cannot start as asked (one line for the operator)."""


@dataclass
class Options:
    dry_run: bool = False
    scope: list[str] = field(default_factory=list)  # Entra groups (names or ids): only their members are planned
    restart: bool = False  # discard an unfinished run instead of resuming it
    source: EventSource = EventSource.OPERATOR


@dataclass
class Progress:
    """What an interactive run shows: the phase, users planned so far, and the counts per action."""

    phase: str
    done: int = 0
    total: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


@dataclass
class Calls:
    """API calls a run made, by what they were for (docs/reconciliation.md compares them with the minimum)."""

    graph_user_pages: int = 0
    graph_group_pages: int = 0
    graph_other: int = 0
    sf_user_pages: int = 0
    sf_entitlement_pages: int = 0
    sf_catalog: int = 0
    sf_writes: int = 0
    sf_other: int = 0

    def total(self) -> int:
        return sum(vars(self).values())


class _Usernames(Mapping[str, str]):
    """Salesforce user id -> Username, looked up in the held Salesforce side (who edited a record)."""

    def __init__(self, side: SalesforceSide) -> None:
        self.side = side

    def __getitem__(self, key: str) -> str:
        view = self.side.user(key)
        if view is None:
            raise KeyError(key)
        return str(view.get("Username") or key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.side.index.by_id)

    def __len__(self) -> int:
        return len(self.side)


class Reconciler:
    def __init__(
        self,
        deps: SyncDeps,
        *,
        chunk_size: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        guard: Any = None,
    ) -> None:
        self.deps = deps
        self.chunk_size = int(chunk_size or deps.settings.reconcile_chunk_size)
        self.on_progress = on_progress
        self.guard = guard if guard is not None else DeprovisionGuard(deps.redis, deps.settings)
        self.progress = Progress("starting")
        self.calls = Calls()
        self._lock: RunLock | None = None

    # ------------------------------------------------------------------ entry point
    def run(self, options: Options) -> RunLog:
        """Run (or resume) a reconciliation; returns its state for the reports. Raises `RunInProgress` when another
        process is running one, `NoMapping` without a mapping, `ReconcileError` for a request it cannot honour."""
        deps = self.deps
        mapping = deps.mappings.current()
        runlog = self._open(options)
        started = time.monotonic()
        graph_before, sf_before = _calls(deps.graph), _calls(deps.sf)
        try:
            if not options.dry_run:
                audit(
                    deps.redis,
                    "reconcile",
                    None,
                    None,
                    "resumed" if runlog.resumed else "started",
                    runlog.run_id,
                    scope=runlog.scope,
                )
            _Run(self, runlog, mapping, options).execute()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self.calls.graph_other = max(
            0, _calls(deps.graph) - graph_before - self.calls.graph_user_pages - self.calls.graph_group_pages
        )
        self.calls.sf_other = max(
            0,
            _calls(deps.sf)
            - sf_before
            - self.calls.sf_user_pages
            - self.calls.sf_entitlement_pages
            - self.calls.sf_catalog
            - self.calls.sf_writes,
        )
        runlog.set(seconds=round(time.monotonic() - started, 3), calls=vars(self.calls))
        if not options.dry_run:
            runlog.finish()
            audit(
                deps.redis,
                "reconcile",
                None,
                None,
                "done",
                runlog.run_id,
                counts=runlog.counts(),
                calls=self.calls.total(),
            )
        if self._lock is not None:
            self._lock.release()
        log.info(
            "reconcile_run_done",
            run_id=runlog.run_id,
            dry_run=options.dry_run,
            counts=runlog.counts(),
            calls=self.calls.total(),
            seconds=round(time.monotonic() - started, 1),
        )
        return runlog

    def _open(self, options: Options) -> RunLog:
        if options.dry_run:
            return RunLog(new_run_id(), dry_run=True, scope=options.scope)
        redis = self.deps.redis
        self._lock = RunLock(redis)
        self._lock.acquire()
        try:
            unfinished = RedisRunLog.unfinished(redis)
            if unfinished is not None and options.restart:
                unfinished.discard()
                unfinished = None
            if unfinished is not None:
                if options.scope and sorted(options.scope) != sorted(unfinished.scope):
                    raise ReconcileError(
                        f"run {unfinished.run_id} (scope {unfinished.scope or 'all users'}) was cut "
                        "short: run `idsync reconcile` to finish it, or add --restart to discard it"
                    )
                log.info("reconcile_run_resumed", run_id=unfinished.run_id, done=unfinished.get("users_done"))
                return unfinished
            return RedisRunLog.start(redis, options.scope)
        except BaseException:
            self._lock.release()
            raise

    def refresh(self) -> None:
        if self._lock is not None:
            self._lock.refresh()

    def report_progress(
        self, phase: str, done: int | None = None, total: int | None = None, counts: dict[str, int] | None = None
    ) -> None:
        p = self.progress
        if phase != p.phase:
            p.phase, p.done, p.total = phase, 0, None
        if done is not None:
            p.done = done
        if total is not None:
            p.total = total
        if counts is not None:
            p.counts = counts
        self.refresh()
        if self.on_progress is not None:
            self.on_progress(p)


def _calls(client: Any) -> int:
    return int(getattr(client, "calls", 0) or 0)


class _Run:
    """The state of one `Reconciler.run` call (one attempt at a run)."""

    def __init__(self, owner: Reconciler, runlog: RunLog, mapping: IdsyncMapping, options: Options) -> None:
        self.owner = owner
        self.deps = owner.deps
        self.runlog = runlog
        self.mapping = mapping
        self.options = options
        self.dry = options.dry_run
        self.redis = self.deps.redis
        self.links = IdentityLinks(self.redis)
        self.grants = Grants(self.redis)
        self.calls = owner.calls
        self.catalog: Any = None
        self.own_id: str | None = None
        self.side: SalesforceSide | None = None
        self.names: Mapping[str, str] = {}
        self.groups = MappedGroups({}, ())
        self.members: dict[str, set[str]] = {}
        self.scope_members: set[str] | None = None
        self.linked_by_sf: dict[str, str] = {}
        self.unseen_linked: set[str] = set()
        self.claimed: set[str] = set()
        self.waiting: set[str] = set()
        #: users planned with something to write, applied `chunk_size` at a time: id -> (context, observed, tombstone)
        self.queue: dict[str, tuple[UserContext, float, float | None]] = {}
        self.queued = 0  # users that joined the write queue in this attempt (decides the write chunk's size)
        self.with_reviews: set[str] = set()
        #: B2B guests Entra lists (when the mapping makes them Contacts): handed to the contact lane, not planned here
        self.guests: set[str] = set()
        #: a new user's id fields, shown by name in the reports (set with the catalogue and the usernames)
        self.id_names: dict[str, Mapping[str, str]] = {}
        self.planned = 0
        self.local_counts: dict[str, int] = {}

    def execute(self) -> None:
        runlog = self.runlog
        if runlog.get("phase") in ("guard", "done") and runlog.resumed:
            self._guard_phase()  # cut short while handing off: only that is left
            return
        self._read()
        runlog.set(phase="entra")
        self._entra_phase()
        if not self.runlog.scope:
            runlog.set(phase="gone")
            self._gone_phase()
        while self.queue:
            self._flush()
        if not self.runlog.scope:
            runlog.set(phase="salesforce_only")
            self._salesforce_only_phase()
        if self.mapping.guests is not None:
            runlog.set(phase="guests")
            self._guests_phase()
        if not self.dry:
            runlog.set(phase="late_managers")
            self._late_managers_phase()
            runlog.set(phase="guard")
            self._guard_phase()
        runlog.set(phase="done")

    # ------------------------------------------------------------------ reading
    def _read(self) -> None:
        deps, owner = self.deps, self.owner
        owner.report_progress("groups")
        sf_before = _calls(deps.sf)
        self.catalog = deps.catalogs.get(deps.sf)
        self.own_id = deps.sf.own_user_id()
        self.calls.sf_catalog += _calls(deps.sf) - sf_before
        self._read_groups()
        if self.runlog.scope:
            self.scope_members = self._scope_members(self.runlog.scope)

        def on_page(phase: str, side: SalesforceSide) -> None:
            owner.report_progress(phase, done=side.rows)

        before = _calls(deps.sf)
        reader = query_reader(deps.sf, deps.settings, self.catalog, on_wait=owner.refresh)
        self.side = read_salesforce_side(deps.sf, self.mapping, set(self.catalog.permission_set_names), on_page,
                                         reader=reader)
        # the User reads are counted apart from the entitlement reads by the side itself
        self.calls.sf_user_pages += self.side.user_calls
        self.calls.sf_entitlement_pages += _calls(deps.sf) - before - self.side.user_calls
        self.names = _Usernames(self.side)
        self.id_names = {"ProfileId": self.catalog.profile_names, "UserRoleId": self.catalog.role_names,
                         "ManagerId": self.names}
        self.linked_by_sf = {str(k): str(v) for k, v in self.redis.hscan_iter(LINKS_BY_SF_KEY, count=5000)}
        self.unseen_linked = set(self.linked_by_sf.values())
        self.with_reviews = {str(k).partition("#")[0] for k in self.redis.hkeys(REVIEWS_KEY)}

    def _read_groups(self) -> None:
        """Resolve the mapping's groups afresh (the sync lane's cached ids may name a group deleted or renamed since:
        one Graph call per run) and read their members. A group deleted in Entra is then unresolved, so nobody is in
        it, which is exactly what the deprovisioning guard exists to stop from going through; one deleted between
        the two reads answers 404 and counts as empty the same way."""
        deps = self.deps
        if not self.dry:
            forget_group_ids(self.redis)  # a dry run does not read the cache at all, nor write it
        self.groups = resolve_groups(deps.graph, None if self.dry else self.redis, self.mapping)
        snapshots = GroupMembership(self.redis)
        for group_id in self.groups.ids:
            before = _calls(deps.graph)
            try:
                members = deps.graph.transitive_member_ids(group_id)
            except NotFound:
                members = set()
            self.calls.graph_group_pages += _calls(deps.graph) - before
            self.members[group_id] = members
            if not self.dry:
                snapshots.replace(group_id, members)
            self.owner.refresh()
        if not self.dry:
            snapshots.establish_baseline()  # every mapped group's members are planned by this run

    def _scope_members(self, scope: list[str]) -> set[str]:
        graph = self.deps.graph
        ids = [g for g in scope if _looks_like_id(g)]
        names = [g for g in scope if not _looks_like_id(g)]
        found = set(graph.groups_by_ids(ids)) if ids else set()
        for name, groups in (graph.groups_by_name(names) if names else {}).items():
            if not groups:
                raise ReconcileError(f"--scope {name!r}: no such Entra group")
            found.update(str(g["id"]) for g in groups)
        missing = [g for g in ids if g not in found]
        if missing:
            raise ReconcileError(f"--scope {missing[0]!r}: no such Entra group")
        members: set[str] = set()
        for group_id in sorted(found):
            members |= self.members.get(group_id) or graph.transitive_member_ids(group_id)
        return members

    # ------------------------------------------------------------------ entra, in chunks
    def _entra_phase(self) -> None:
        deps = self.deps
        assert self.side is not None
        select = graph_properties(self.mapping)
        total = len(self.side)  # an estimate for progress: the tenants are about the same size
        pages = deps.graph.user_pages(select, expand_manager=self.mapping.manager is not None)
        seen = 0
        while True:
            before = _calls(deps.graph)
            page = next(pages, None)
            self.calls.graph_user_pages += _calls(deps.graph) - before
            if page is None:
                break
            observed = time.time()
            users: list[EntraUser] = []
            for user_json in page:
                user_id = str(user_json["id"])
                self.unseen_linked.discard(user_id)
                if self.scope_members is not None and user_id not in self.scope_members:
                    continue
                groups = [
                    {"id": g, "displayName": self.groups.names.get(g, "")}
                    for g in self.groups.ids
                    if user_id in self.members[g]
                ]
                manager = user_json.get("manager")
                user = EntraUser.from_graph(user_json, groups, manager if isinstance(manager, dict) else None)
                if self.mapping.guests is not None and user.user_type.casefold() == "guest":
                    self.guests.add(user_id)
                users.append(user)
            seen += len(page)
            for start in range(0, len(users), self.owner.chunk_size):
                self._chunk(users[start : start + self.owner.chunk_size], observed)
            self.owner.report_progress("entra", done=seen, total=max(total, seen), counts=self._counts())

    def _gone_phase(self) -> None:
        """Linked users Entra no longer lists: deleted (hard, or soft and restorable): leavers, planned as such."""
        gone = sorted(self.unseen_linked)
        if not gone:
            return
        observed = time.time()
        for start in range(0, len(gone), self.owner.chunk_size):
            ids = gone[start : start + self.owner.chunk_size]
            stored = self.links.links_of(ids)
            users = [
                EntraUser.gone(e, (link.upn or "") if link else "")
                for e, link in stored.items()
                if link is not None and link.sf_user_id
            ]
            self._chunk(users, observed)
            self.owner.report_progress("gone", done=start + len(ids), total=len(gone), counts=self._counts())

    def _guests_phase(self) -> None:
        """Every B2B guest without a Contact link, once, to the contact lane (`sync.contact_changed`): a guest invited
        before idsync ran, or whose invitation event was lost, becomes a Contact the same way a live invitation does
        (the task re-reads Graph and Salesforce). Linked guests are left to their events: one task per guest costs 2-3
        API calls, which for every guest every 4 hours would be a large tenant's daily Salesforce allowance. Counted as
        `guests` (not `ignored`) when planned; a dry run only counts them. Resumable: published in id order, a run cut
        short goes on after the last id it published (a repeat is harmless, the task is idempotent)."""
        runlog = self.runlog
        if self.dry or self.deps.sender is None or not self.guests:
            return
        after = str(runlog.get("guests_published_to", "") or "")
        pending = [g for g in sorted(self.guests) if g > after]
        tenant = self.deps.settings.graph_tenant_id or "default"
        links = ContactLinks(self.redis)
        handed = 0
        for start in range(0, len(pending), 500):
            batch = pending[start : start + 500]
            for entra_id in links.unlinked(batch):
                event = IdentityEvent(kind=EventKind.USER_CHANGED, source=self.options.source, tenant=tenant,
                                      object_id=entra_id, correlation_id=runlog.run_id)
                publish(self.deps.sender, event, CONTACT_TASK)
                handed += 1
            runlog.set(guests_published_to=batch[-1])
            self.owner.refresh()
        log.info("reconcile_guests_handed", run_id=runlog.run_id, guests=len(self.guests), unlinked=handed)

    def _chunk(self, users: list[EntraUser], observed: float) -> None:
        """Plan a chunk and record every plan; users whose plan needs the write path join the write queue, which
        is applied `chunk_size` users at a time (so 1,000 changed users among 100,000 cost 5 collection calls,
        not one per planning chunk); the others are done at once."""
        if not users:
            return
        runlog, deps = self.runlog, self.deps
        ids = [u.id for u in users]
        done = runlog.done_of(ids) if runlog.resumed else set()
        users = [u for u in users if u.id not in done]
        if not users:
            return
        ids = [u.id for u in users]
        recorded = runlog.recorded_of(ids) if runlog.resumed else set()
        tombstones = self._tombstones(ids)
        fresh = [u for u in users if not (u.id in tombstones and tombstones[u.id] > observed)]
        if len(fresh) < len(users):
            skipped = [u.id for u in users if u not in fresh]
            self._count("skipped", len(skipped), recorded, skipped)
        contexts = self._contexts(fresh)
        observed_at = {u.id: observed for u in fresh}

        # plan (the engine), and record every plan before anything is written
        planned = plan_and_apply(
            deps,
            self.mapping,
            self.catalog,
            contexts,
            BatchReport(),
            observed=observed_at,
            tombstones=tombstones,
            correlation_ids={},
            dry_run=True,
        )
        entries: list[tuple[str, str, dict[str, list[dict[str, Any]]]]] = []
        settled: list[str] = [u.id for u in users if u not in fresh]
        for entra_id, p in planned.plans.items():
            ctx = contexts[entra_id]
            action = ACTION_NAMES[p.action]
            if p.action is PlanAction.IGNORE and entra_id in self.guests:
                action = "guests"  # not provisioned, but not ignored either: the contact lane's (`_guests_phase`)
            self.local_counts[action] = self.local_counts.get(action, 0) + 1
            if entra_id not in recorded:
                revived, inactive = inactive_rows(p, ctx.state.user, entra_id in tombstones)
                rows: dict[str, list[dict[str, Any]]] = {
                    "changes": change_rows(p, ctx.state.user, ctx.state.granted, self.own_id, self.names,
                                           self.id_names) + revived,
                    "reviews": review_rows(p) + inactive,
                    "deprovisions": [deprovision_row(p)] if p.action is PlanAction.DEPROVISION else [],
                }
                entries.append((entra_id, action, rows))
            if p.waiting_for_manager:
                self.waiting.add(entra_id)
            if not self.dry and self._needs_write_path(p, ctx):
                self.queue[entra_id] = (ctx, observed, tombstones.get(entra_id))
                self.queued += 1
            else:
                settled.append(entra_id)
        runlog.record_many(entries)
        self.planned += len(planned.plans)
        if not self.dry:
            runlog.mark_done(settled)  # nothing to write for them
            while len(self.queue) >= self._write_chunk():
                self._flush()

    def _write_chunk(self) -> int:
        """Users written together: `chunk_size` (200) while the run has few to write, so a small drift is written
        as it is found; `reconcile_write_chunk` (10,000) once more than `bulk_write_threshold` joined the queue, so
        the executor updates them through one Bulk API 2.0 job per chunk instead of a collection call per 200."""
        settings = self.deps.settings
        threshold = int(getattr(settings, "bulk_write_threshold", 0) or 0)
        if threshold <= 0 or self.queued <= threshold:
            return self.owner.chunk_size
        return max(self.owner.chunk_size, int(settings.reconcile_write_chunk))

    def _flush(self) -> None:
        """Write one chunk of queued users through the sync lane's own path (`plan_and_apply`): re-planned from the
        same state (the engine is pure: the same plans), written, and only then marked done."""
        if not self.queue:
            return
        deps, runlog = self.deps, self.runlog
        ids = list(self.queue)[: self._write_chunk()]
        batch = {e: self.queue.pop(e) for e in ids}
        contexts = {e: item[0] for e, item in batch.items()}
        observed = {e: item[1] for e, item in batch.items()}
        tombstones = {e: item[2] for e, item in batch.items() if item[2] is not None}
        before = _calls(deps.sf)
        report = plan_and_apply(
            deps,
            self.mapping,
            self.catalog,
            contexts,
            BatchReport(),
            observed=observed,
            tombstones=tombstones,
            correlation_ids={e: runlog.run_id for e in ids},
            dry_run=False,
            deprovision=lambda _p: None,
            on_wait=self.owner.refresh,
        )
        self.calls.sf_writes += report.write_calls
        self.calls.sf_other += max(0, _calls(deps.sf) - before - report.write_calls)
        failures = [
            {
                "entra_id": e,
                "upn": r.plan.upn,
                "salesforce_id": r.sf_user_id,
                "change": f.change.kind.value,
                "target": f.change.target,
                "code": f.code,
                "message": f.message,
            }
            for e, r in report.results.items()
            for f in r.failed
        ]
        if failures:
            runlog.add_rows("failures", failures)
        if report.retry:
            runlog.count("retry_later", len(report.retry))
            DirtyUsers(self.redis).mark(report.retry)  # the sync lane tries them again with backoff
        runlog.chunk_done(ids)
        log.info(
            "reconcile_chunk_written",
            run_id=runlog.run_id,
            users=len(ids),
            writes=report.write_calls,
            failures=len(failures),
            outcomes=report.count(),
        )
        self.owner.refresh()

    def _count(self, action: str, n: int, recorded: set[str], ids: list[str]) -> None:
        self.local_counts[action] = self.local_counts.get(action, 0) + n
        self.runlog.record_many([(e, action, {}) for e in ids if e not in recorded])

    def _counts(self) -> dict[str, int]:
        return (
            self.runlog.counts()
            if self.runlog.resumed
            else {**{k: 0 for k in ("create", "update", "deprovision", "review", "unchanged")}, **self.local_counts}
        )

    def _needs_write_path(self, p: Plan, ctx: UserContext) -> bool:
        """Plans that write, route or raise something; plus unchanged users the write path still looks at: a
        Salesforce user that is inactive (reactivation, or a review item), a review item to close, a manager to
        wait for."""
        if p.action in _NEEDS_WRITE_PATH or p.reviews or p.waiting_for_manager:
            return True
        user = ctx.state.user
        if p.action is PlanAction.NOOP and user is not None and user.get("IsActive") is False and p.in_scope:
            return True
        return p.entra_id in self.with_reviews

    def _tombstones(self, ids: list[str]) -> dict[str, float]:
        pipe = self.redis.pipeline(transaction=False)
        for entra_id in ids:
            pipe.get(f"idsync:tombstone:{entra_id}")
        return {e: float(t) for e, t in zip(ids, pipe.execute(), strict=True) if t is not None}

    def _contexts(self, users: list[EntraUser]) -> dict[str, UserContext]:
        """Join a chunk with the Salesforce side: stored link first, else the engine's matching rules."""
        side = self.side
        assert side is not None
        ids = [u.id for u in users]
        stored = self.links.links_of(ids)
        granted = self.grants.of(ids)
        manager_ids = sorted({u.manager_id for u in users if u.manager_id})
        managers = self.links.links_of(manager_ids) if manager_ids else {}
        contexts: dict[str, UserContext] = {}
        for user in users:
            link = stored.get(user.id)
            outcome = match_user(user, self.mapping, link.sf_user_id if link else None, side.index, self.linked_by_sf)
            record = side.user(outcome.sf_user_id) if outcome.kind == "link" else None
            if record is not None:
                self.claimed.add(str(record["Id"]))
            elif outcome.review is not None:
                self.claimed.update(outcome.review.candidates)
            manager = managers.get(user.manager_id or "") if user.manager_id else None
            contexts[user.id] = user_context(
                user,
                link,
                outcome,
                record,
                side.entitlements,
                granted.get(user.id, frozenset()),
                manager.sf_user_id if manager else None,
            )
        return contexts

    # ------------------------------------------------------------------ what is left
    def _salesforce_only_phase(self) -> None:
        """Salesforce users no Entra user links to or matches: listed for a person, never touched."""
        if self.runlog.get("salesforce_only_listed"):
            return
        side = self.side
        assert side is not None
        rows: list[dict[str, Any]] = []
        for view in side.users():
            sf_id = str(view["Id"])
            if sf_id in self.claimed or sf_id in self.linked_by_sf:
                continue
            rows.append(
                {
                    "salesforce_id": sf_id,
                    "username": view.get("Username"),
                    "email": view.get("Email"),
                    "active": view.get("IsActive"),
                    "profile": self.catalog.profile_names.get(str(view.get("ProfileId")), view.get("ProfileId")),
                    "last_modified_by": self.names.get(
                        str(view.get("LastModifiedById") or ""), view.get("LastModifiedById")
                    ),
                    "last_modified_at": view.get("LastModifiedDate"),
                    "idsync_integration_user": bool(self.own_id and str(sf_id)[:15] == self.own_id[:15]),
                }
            )
        self.runlog.add_rows("salesforce_only", rows)
        self.runlog.count("salesforce_only", len(rows))
        self.local_counts["salesforce_only"] = len(rows)
        self.runlog.set(salesforce_only_listed=1)

    def _late_managers_phase(self) -> None:
        """Users planned before their manager had a Salesforce user: the manager was created (or linked) later in
        this run, so their manager field is set now, through the same batch path as the sync lane."""
        if not self.waiting:
            return
        ids = sorted(self.waiting)
        for start in range(0, len(ids), 200):
            batch = ids[start : start + 200]
            before = _calls(self.deps.sf)
            report = sync_users(self.deps, batch, correlation_ids={e: self.runlog.run_id for e in batch})
            self.calls.sf_writes += report.write_calls
            self.calls.sf_other += max(0, _calls(self.deps.sf) - before - report.write_calls)
            self.owner.refresh()

    def _guard_phase(self) -> None:
        """Every deactivation of the run goes to the guard at once (one decision for the run, kept for a resumed
        run); then every one goes to the revocation lane, which freezes the user at once and deactivates only what
        the guard lets through (a held run waits for `idsync approve RUN_ID`)."""
        runlog, deps = self.runlog, self.deps
        rows = list(runlog.rows("deprovisions"))
        if not rows:
            return
        if not runlog.get("guard"):
            linked_total = int(self.redis.hlen(LINKS_BY_SF_KEY))
            decision = self.owner.guard.hold_run(
                runlog.run_id, [(r["entra_id"], r.get("salesforce_id"), r.get("upn") or "") for r in rows], linked_total
            )
            held = bool(decision.held)
            runlog.set(
                guard={
                    "held": held,
                    "reason": str(getattr(decision, "reason", "")),
                    "deprovisions": len(rows),
                    "linked_total": linked_total,
                }
            )
            # a hold needs a person (a warning); deprovisions the guard lets through are the run's ordinary work
            (log.warning if held else log.info)(
                "reconcile_deprovisions_held" if held else "reconcile_deprovisions_allowed",
                run_id=runlog.run_id,
                deprovisions=len(rows),
                linked_total=linked_total,
            )
        if deps.sender is None:
            return
        start = int(runlog.get("deprovisions_published", 0) or 0)
        tenant = deps.settings.graph_tenant_id or "default"
        for n, row in enumerate(rows[start:], start=start):
            event = IdentityEvent(
                kind=EventKind.USER_OUT_OF_SCOPE,
                source=self.options.source,
                tenant=tenant,
                object_id=row["entra_id"],
                correlation_id=runlog.run_id,
            )
            publish(deps.sender, event)
            if (n + 1) % 100 == 0:
                runlog.set(deprovisions_published=n + 1)
                self.owner.refresh()
        runlog.set(deprovisions_published=len(rows))


def _looks_like_id(value: str) -> bool:
    parts = value.split("-")
    return len(parts) == 5 and all(c in "0123456789abcdefABCDEF-" for c in value)
