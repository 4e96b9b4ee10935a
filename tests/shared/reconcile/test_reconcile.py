"""Reconciliation against the real sandbox (Graph and Salesforce over HTTPS, a real redis-server): a dry run writes
nothing anywhere, each kind of drift is found, reported as what it is and repaired, direct Salesforce edits are told
apart from changes in Entra, and a run cut short resumes without writing anything twice."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
import redis as redis_lib

from shared import audit
from shared.engine import PlanAction
from shared.guests.links import ContactLinks
from shared.reconcile.run_state import RedisRunLog
from shared.reconcile.runner import Options, ReconcileError, Reconciler
from tests.shared.reconcile.conftest import make_deps, reconcile

_names = (f"recon{n:03d}" for n in itertools.count(1))


def _writes(sandbox: Any) -> dict[str, int]:
    return {k: v for k, v in sandbox.state.activity.counters.items() if "write" in k}


def _redis_state(client: redis_lib.Redis) -> dict[str, Any]:
    raw = redis_lib.Redis(connection_pool=client.connection_pool)
    return {str(key): raw.dump(key) for key in sorted(raw.keys("*"))}


def _by_user(rows: list[dict[str, Any]], upn: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("upn") == upn]


def _linked_pool(tenant: Any, org: Any) -> list[dict[str, Any]]:
    """Enabled members whose Salesforce user is active (after a converging run), each used by one test step."""
    pool = []
    for user in tenant.users("accountEnabled eq true and userType eq 'Member'",
                             select="id,userPrincipalName,jobTitle,department"):
        sf = org.user(user["userPrincipalName"])
        if sf and sf["IsActive"]:
            pool.append({**user, "sf_id": sf["Id"]})
    return pool


def _take(pool: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    for n, user in enumerate(pool):
        if all(user.get(k) == v for k, v in where.items()):
            return pool.pop(n)
    pytest.fail(f"no active linked member with {where} left")


def test_a_dry_run_writes_nothing_anywhere_and_still_shows_the_whole_plan(sandbox, deps, redis_client) -> None:
    deps.mappings.current()  # the process has its mapping loaded (the store notes that once, at load)
    writes, state = _writes(sandbox), _redis_state(redis_client)

    run = reconcile(deps, dry_run=True)

    assert _writes(sandbox) == writes  # no Salesforce record and no Graph object written
    assert _redis_state(redis_client) == state  # not even idsync's own state (links, grants, snapshots, reviews)
    counts = run.counts()
    assert counts["update"] > 0 and counts["deprovision"] >= 2  # the seeded drift and the two seeded leavers
    fields = Counter(r["field"] for r in run.rows("changes"))
    assert fields["Title"] > 0 and fields["Department"] > 0
    assert deps.sender.tasks == []


def test_each_kind_of_drift_is_found_reported_as_itself_and_repaired(sandbox, deps, tenant, org, setup) -> None:
    reconcile(deps)  # converge: everything linked and in step
    domain = tenant.verified_domain()
    pool = _linked_pool(tenant, org)
    west = next(u for u in pool if "Sales_Cloud_User" not in org.view(u["userPrincipalName"])["PermissionSets"])
    pool.remove(west)  # an entitlement idsync grants, then removed by hand
    tenant.add_to_group(west["id"], "Sales Team West")
    reconcile(deps)
    setup.remove_permission_set(west["userPrincipalName"], "Sales_Cloud_User")

    joiner_upn = f"{next(_names)}@{domain}"  # missing in Salesforce
    joiner = tenant.create_user("Nia", "Joiner", joiner_upn, jobTitle="Analyst", department="Finance",
                                employeeId="E771001", usageLocation="US")
    tenant.add_to_group(joiner["id"], "All Employees")
    leaver = _take(pool)  # linked, then out of scope
    tenant.remove_from_group(leaver["id"], "All Employees")
    moved = _take(pool)  # changed in Entra
    tenant.update(moved["id"], jobTitle="Head of Everything")
    edited = _take(pool)  # changed in Salesforce by a person
    setup.edit_user(edited["userPrincipalName"], Title="Edited In Setup")
    ambiguous_upn = f"{next(_names)}@{domain}"  # two Salesforce users fit one rule: a person decides
    ambiguous = tenant.create_user("Amb", "Iguous", ambiguous_upn, employeeId="E771002", mail=f"amb@{domain}")
    tenant.add_to_group(ambiguous["id"], "All Employees")
    for n in (1, 2):
        setup.insert_user(Username=f"amb{n}@legacy.example.com", LastName=f"Iguous{n}", Email=f"amb@{domain}",
                          EmployeeNumber="E771002", CommunityNickname=f"amb{n}")
    lonely_id = setup.insert_user(Username="contractor@legacy.example.com", LastName="Contractor",
                                  CommunityNickname="contractor")
    lonely_before = setup.user("contractor@legacy.example.com")

    plan = reconcile(deps, dry_run=True)
    changes, reviews = list(plan.rows("changes")), list(plan.rows("reviews"))
    assert [r["drift"] for r in _by_user(changes, joiner_upn)][0] == "missing_in_salesforce"
    assert [(r["drift"], r["after"]) for r in _by_user(changes, leaver["userPrincipalName"])] == [
        ("out_of_scope", False)]
    [title] = [r for r in _by_user(changes, moved["userPrincipalName"]) if r["field"] == "Title"]
    assert (title["drift"], title["after"], title["direct_edit"]) == ("field", "Head of Everything", False)
    [edit] = [r for r in _by_user(changes, edited["userPrincipalName"]) if r["field"] == "Title"]
    assert (edit["before"], edit["direct_edit"], edit["modified_by_name"]) == (
        "Edited In Setup", True, "admin@idsync-sandbox.example.com")
    [regrant] = [r for r in _by_user(changes, west["userPrincipalName"]) if r["field"] == "PermissionSet"]
    assert (regrant["drift"], regrant["after"], regrant["direct_edit"]) == ("entitlement", "Sales_Cloud_User", True)
    [review] = _by_user(reviews, ambiguous_upn)
    assert review["code"] == "match_several" and len(review["candidates"]) == 2
    assert any(r["salesforce_id"] == lonely_id for r in plan.rows("salesforce_only"))

    done = reconcile(deps)
    assert done.counts()["create"] >= 1 and done.counts()["review"] >= 1
    [(task, event)] = [t for t in deps.sender.tasks if t[1]["object_id"] == leaver["id"]]
    assert task == "revocation.deprovision_user" and event["correlation_id"] == done.run_id

    after = reconcile(deps, dry_run=True)
    pending = {r["upn"] for r in after.rows("changes") if r["drift"] != "out_of_scope"}
    assert not pending & {joiner_upn, moved["userPrincipalName"], edited["userPrincipalName"],
                          west["userPrincipalName"]}
    assert org.view(edited["userPrincipalName"])["Title"] == edited["jobTitle"]
    assert org.view(moved["userPrincipalName"])["Title"] == "Head of Everything"
    assert "Sales_Cloud_User" in org.view(west["userPrincipalName"])["PermissionSets"]
    assert org.user(joiner_upn) is not None and org.user(ambiguous_upn) is None
    assert setup.user("contractor@legacy.example.com") == lonely_before  # reported, never touched


def test_a_title_changed_in_entra_is_drift_but_not_a_direct_salesforce_edit(sandbox, deps, tenant, org, setup) -> None:
    reconcile(deps)
    pool = _linked_pool(tenant, org)
    in_entra, in_setup = _take(pool), _take(pool)
    tenant.update(in_entra["id"], department="Changed In Entra")
    setup.edit_user(in_setup["userPrincipalName"], Department="Changed In Setup")

    rows = {r["upn"]: r for r in reconcile(deps, dry_run=True).rows("changes") if r["field"] == "Department"}

    assert rows[in_entra["userPrincipalName"]]["direct_edit"] is False
    direct = rows[in_setup["userPrincipalName"]]
    assert direct["direct_edit"] is True and direct["before"] == "Changed In Setup"
    assert direct["modified_by"][:15] == setup.admin_id[:15] and direct["modified_at"]


class _Killed(BaseException):
    """Stands for SIGKILL in the middle of a chunk's writes: nothing after it runs, no cleanup either."""


def test_a_run_cut_short_resumes_where_it_stopped_and_writes_nothing_twice(sandbox, settings, redis_client,
                                                                           deps) -> None:
    expected = reconcile(deps, dry_run=True).counts()
    assert expected["update"] > 20  # enough drift to span several chunks of 10

    crashing = make_deps(settings, redis_client)
    calls = {"n": 0}
    real_update = crashing.sf.collections_update

    def update_then_die(records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 3:  # the third chunk's User updates reach Salesforce, then the process dies
            real_update(records, all_or_none)
            raise _Killed()
        return real_update(records, all_or_none)

    crashing.sf.collections_update = update_then_die
    with pytest.raises(_Killed):
        Reconciler(crashing).run(Options())
    cut = RedisRunLog.unfinished(redis_client)
    assert cut is not None and 1 <= int(cut.meta()["chunks_done"]) < 10

    resumed = Reconciler(deps).run(Options())

    assert resumed.run_id == cut.run_id
    assert resumed.counts() == expected  # every user counted once, across both attempts
    updates = [(r["entra_id"], r["detail"].get("change"), r["detail"].get("target"))
               for r in audit.recent(redis_client, 100_000)
               if r["correlation_id"] == cut.run_id and r["action"] in ("field_update", "provision",
                                                                          "entitlement_add", "entitlement_remove")]
    assert updates and len(updates) == len(set(updates))  # no change written twice
    again = reconcile(deps, dry_run=True).counts()
    assert again["update"] == 0 and again["create"] == 0


def test_a_run_cut_short_is_not_resumed_under_another_scope(sandbox, deps, redis_client) -> None:
    RedisRunLog.start(redis_client)
    with pytest.raises(ReconcileError, match="--restart"):
        Reconciler(deps).run(Options(scope=["Marketing"]))
    run = Reconciler(deps).run(Options(scope=["Marketing"], restart=True, dry_run=False))
    assert run.scope == ["Marketing"]


def test_a_scoped_run_plans_only_the_group_s_members(sandbox, deps, tenant) -> None:
    members = {u["id"] for u in tenant.http.get(f"/groups/{tenant.group('Marketing')['id']}/members",
                                                 params={"$select": "id", "$top": 999}).json()["value"]}
    run = reconcile(deps, dry_run=True, scope=["Marketing"])
    planned = {r["entra_id"] for r in run.rows("changes")}
    assert planned and planned <= members
    assert run.row_count("salesforce_only") == 0  # a scoped run cannot judge who has no counterpart


def test_the_plan_is_the_engine_s_plan(sandbox, deps) -> None:
    """Same users, same answer as the sync lane's batch path (`sync_users`, dry run)."""
    from shared.provisioning.batch import sync_users

    run = reconcile(deps, dry_run=True)
    by_user: dict[str, str] = {}
    for row in run.rows("changes"):
        by_user.setdefault(row["entra_id"], row["action"])
    sample = sorted(by_user)[:15]
    report = sync_users(deps, sample, dry_run=True)
    names = {PlanAction.UPDATE: "update", PlanAction.CREATE: "create", PlanAction.DEPROVISION: "deprovision",
             PlanAction.REVIEW: "review"}
    assert {e: names.get(report.plans[e].action, "other") for e in sample if e in report.plans} == {
        e: by_user[e] for e in sample if e in report.plans}



class _HoldingGuard:
    """Stands for the mass-deprovisioning guard deciding to hold the run."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, list[tuple[str, str | None, str]], int]] = []

    def hold_run(self, run_id: str, deprovisions: list[tuple[str, str | None, str]], linked_total: int) -> Any:
        self.asked.append((run_id, deprovisions, linked_total))
        from types import SimpleNamespace

        return SimpleNamespace(held=True, reason="more than 1 deactivation")  # what reconcile reads of a decision


def test_a_run_s_deactivations_go_to_the_guard_as_one_set_then_to_the_revocation_lane(sandbox, deps, tmp_path
                                                                                       ) -> None:
    from shared.reconcile.reports import ReportData, write_reports

    guard = _HoldingGuard()
    run = Reconciler(deps, guard=guard).run(Options())

    [(run_id, deprovisions, linked_total)] = guard.asked
    planned = {r["entra_id"] for r in run.rows("deprovisions")}
    assert run_id == run.run_id and {d[0] for d in deprovisions} == planned and len(planned) >= 2
    assert linked_total >= 40
    # held or not, each goes to the revocation lane, which freezes at once and deactivates only what is allowed
    published = {e["object_id"] for name, e in deps.sender.tasks if name == "revocation.deprovision_user"}
    assert published == planned
    data = ReportData.of(run)
    assert data.summary()["guard"]["held"] is True
    write_reports(data, [tmp_path / "run.html"])
    assert f"idsync approve {run.run_id}" in (tmp_path / "run.html").read_text()


class _AllowingGuard(_HoldingGuard):
    def hold_run(self, run_id: str, deprovisions: list[tuple[str, str | None, str]], linked_total: int) -> Any:
        super().hold_run(run_id, deprovisions, linked_total)
        from types import SimpleNamespace

        return SimpleNamespace(held=False, reason="")


@pytest.mark.parametrize(("guard", "event", "level"), [(_HoldingGuard, "reconcile_deprovisions_held", "warning"),
                                                       (_AllowingGuard, "reconcile_deprovisions_allowed", "info")])
def test_a_hold_is_logged_as_a_warning_and_deactivations_let_through_as_information(sandbox, deps, guard, event,
                                                                                     level) -> None:
    """A warning reaches the operator's terminal (`idsync reconcile` shows warnings); an allowed guard decision is the
    run's ordinary work and is not one."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        Reconciler(deps, guard=guard()).run(Options())
    [decision] = [entry for entry in logs if entry["event"].startswith("reconcile_deprovisions_")]
    assert (decision["event"], decision["log_level"]) == (event, level)


def test_one_run_converges_even_when_a_new_hire_s_manager_is_a_leaver_matched_in_the_same_run(
    sandbox, deps, tenant, org, setup
) -> None:
    """A first run links the seeded users by matching. A new hire's manager who has just left is matched, linked and
    deprovisioned in the same run: the new hire's ManagerId is set in that run, not left for the next one."""
    manager = next(u for u in _linked_pool(tenant, org) if tenant.user(u["id"]).get("accountEnabled"))
    hire_upn = f"{next(_names)}@{tenant.verified_domain()}"
    hire = tenant.create_user("Noa", "Newhire", hire_upn, jobTitle="Analyst", department="Finance",
                              employeeId="E771003", usageLocation="US")
    tenant.add_to_group(hire["id"], "All Employees")
    tenant.set_manager(hire["id"], manager["id"])
    tenant.disable(manager["id"])

    done = reconcile(deps)

    assert [r["after"] for r in _by_user(list(done.rows("changes")), manager["userPrincipalName"])
            if r["field"] == "IsActive"] == [False]
    assert setup.user(hire_upn).get("ManagerId") == manager["sf_id"]
    after = reconcile(deps, dry_run=True)
    assert [r for r in _by_user(list(after.rows("changes")), hire_upn)] == []


def test_every_guest_without_a_contact_goes_to_the_contact_lane_and_a_dry_run_only_counts_them(
        sandbox, deps, tenant, redis_client) -> None:
    guests = {u["id"] for u in tenant.users("userType eq 'Guest'", select="id")}
    assert guests  # the seed has B2B guests, invited before idsync ran

    dry = reconcile(deps, dry_run=True)
    assert dry.counts()["guests"] == len(guests)
    members_ignored = dry.counts().get("ignored", 0)
    entra_total = len(tenant.users("userType eq 'Member' or userType eq 'Guest'", select="id"))
    counted = sum(v for k, v in dry.counts().items() if k not in ("salesforce_only",))
    assert counted == entra_total  # each Entra user counted once: a guest is not also "ignored"
    assert members_ignored < entra_total
    assert not [t for t in deps.sender.tasks if t[0] == "sync.contact_changed"]

    run = reconcile(deps)
    handed = [event for name, event in deps.sender.tasks if name == "sync.contact_changed"]
    assert sorted(e["object_id"] for e in handed) == sorted(guests)
    assert {e["correlation_id"] for e in handed} == {run.run_id}
    assert run.counts()["guests"] == len(guests)

    linked = sorted(guests)[0]  # its Contact exists now: its own events keep it current, not every run
    ContactLinks(redis_client).record(linked, "003000000000001AAA", account_id=None, kind="guest", email=None,
                                      upn=None, chain=())
    deps.sender.tasks.clear()
    reconcile(deps)
    again = sorted(event["object_id"] for name, event in deps.sender.tasks if name == "sync.contact_changed")
    assert again == sorted(guests - {linked})
