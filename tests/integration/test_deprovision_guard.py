"""Done-when (issue 10): the mass-deprovisioning guard stops a scope mistake — the in-scope group deleted in Entra —
and `idsync approve` releases it; in live mode and in reconcile mode.

Live mode is the real pipeline: the Entra admin deletes "All Employees" through Graph, the sandbox notifies the
webhook, the sync lane re-reads the group and plans every member out of scope, the revocation lane deprovisions
them: the first `IDSYNC_GUARD_MAX_COUNT` are deactivated, every further one is frozen and held. `idsync status` says
so, `idsync approve RUN_ID` deactivates the rest and their ownership transfers follow.

Reconcile mode: `idsync reconcile` after the same mistake: the run's deprovisions are judged as one set before
anything is published, the whole set is held (frozen, not deactivated), and `idsync approve RUN_ID` releases it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from simple_salesforce import format_soql

from sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

MAX_COUNT = 5
GUARD_ENV = {"IDSYNC_GUARD_MAX_COUNT": str(MAX_COUNT), "IDSYNC_GUARD_MAX_SHARE": "0"}
SCOPE_GROUP = "All Employees"


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """A sandbox of its own per test: each test deletes the demo mapping's scope group. Every demo group seeded."""
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=40, groups=13, seed=29, overlap=1.0)
    server.state.config.patch({"graph": {"notification_retry_base_s": 0.5}})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _deps(stack: Any, sender: Any = None) -> Any:
    from shared.graph_client import GraphClient
    from shared.provisioning.batch import SyncDeps
    from shared.provisioning.catalog_reader import CatalogCache
    from shared.provisioning.mapping_store import EXAMPLE_MAPPING, MappingStore
    from shared.salesforce_client import SalesforceClient

    settings = stack.settings()
    return SyncDeps(settings, stack.redis, GraphClient(settings), SalesforceClient(settings),
                    MappingStore(EXAMPLE_MAPPING, None), CatalogCache(), sender)


def _link_scope_members(stack: Any) -> dict[str, str]:
    """What idsync's first sync does: every member of the scope group planned and linked to their Salesforce user
    (the sync lane's own batch code, in this process; nothing is handed off, so the seed's disabled members are not
    revoked yet). Returns entra id -> Salesforce id of those whose Salesforce user is active: the users a deleted
    scope group deprovisions (the enabled ones as out of scope, the disabled ones as the leavers they are)."""
    from shared.identity_links import IdentityLinks
    from shared.provisioning.batch import sync_users

    # This is about the guard: the seed's deactivation blockers (tests/integration/test_offboarding.py) are cleared,
    # as a Salesforce admin would, so every allowed deactivation goes through.
    for sf_id in stack.admin("GET", "/_sandbox/salesforce/deactivation-blockers"):
        stack.admin("DELETE", f"/_sandbox/salesforce/users/{sf_id}/deactivation-blocker")
    tenant = stack.tenant
    group = tenant.group(SCOPE_GROUP)
    members = tenant.http.get(f"/groups/{group['id']}/members",
                              params={"$select": "id,userType,userPrincipalName", "$top": "999"}
                              ).raise_for_status().json()["value"]
    members = [m for m in members if m.get("userType") == "Member"]
    sync_users(_deps(stack), [m["id"] for m in members])
    links = IdentityLinks(stack.redis)
    found: dict[str, str] = {}
    for member in members:
        link = links.get_link(member["id"])
        sf_user = None if link and link.sf_user_id else stack.org.user(member["userPrincipalName"])
        sf_id = link.sf_user_id if link and link.sf_user_id else (sf_user or {}).get("Id")
        if sf_id:
            found[member["id"]] = sf_id
    active = {r["Id"] for r in _sf_users(stack, list(found.values())) if r["IsActive"]}
    return {e: sf for e, sf in found.items() if sf in active}


def _sf_users(stack: Any, sf_ids: list[str]) -> list[dict[str, Any]]:
    soql = format_soql("SELECT Id, IsActive FROM User WHERE Id IN {}", sf_ids)
    return list(stack.org.sf.query_all(soql)["records"])


def _frozen(stack: Any, sf_ids: list[str]) -> set[str]:
    soql = format_soql("SELECT UserId, IsFrozen FROM UserLogin WHERE UserId IN {}", sf_ids)
    return {r["UserId"] for r in stack.org.sf.query_all(soql)["records"] if r["IsFrozen"]}


def _state(stack: Any, expected: dict[str, str]) -> tuple[set[str], set[str]]:
    """(deactivated, still active) among the expected users' Salesforce ids."""
    rows = _sf_users(stack, list(expected.values()))
    return {r["Id"] for r in rows if not r["IsActive"]}, {r["Id"] for r in rows if r["IsActive"]}


def _delete_scope_group(stack: Any) -> str:
    """The scope mistake, as an Entra admin makes it; returns the group's id."""
    group = stack.tenant.group(SCOPE_GROUP)
    stack.tenant.http.delete(f"/groups/{group['id']}").raise_for_status()
    return str(group["id"])


def _idsync(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=stack.tmp, env={**os.environ, **stack.env},
                          capture_output=True, text=True, timeout=120)


def _outcomes(stack: Any, entra_ids: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for record in reversed(stack.audit("revoke")):
        if record["entra_id"] in entra_ids:
            out.setdefault(record["entra_id"], []).append(record["outcome"])
    return out


def _approve_and_wait(stack: Any, wait_for: Any, run_id: str, expected: dict[str, str], held: set[str]) -> None:
    """`idsync approve RUN_ID` as an operator runs it; every held user is then deactivated and their records moved."""
    approved = _idsync(stack, "approve", run_id)
    assert approved.returncode == 0, approved.stderr
    assert f"{run_id}: approved; {len(held)} deactivations queued" in approved.stdout
    wait_for(lambda: _state(stack, expected)[1] == set(), timeout=120, interval=0.5,
             what="every held user deactivated after the approval")
    assert {r["entra_id"] for r in stack.audit("guard_approved")} == held
    assert {r["detail"].get("run_id") for r in stack.audit("guard_approved")} == {run_id}
    wait_for(lambda: held <= {t["entra_id"] for t in stack.audit("transfer_ownership")}, timeout=120,
             interval=0.5, what="the ownership transfers of the released users")
    status = json.loads(_idsync(stack, "status", "--json").stdout)
    assert status["guard"] == {"held_runs": [], "held_users": 0}


@pytest.mark.timeout(600)
def test_live_the_deleted_scope_group_deactivates_up_to_the_limit_holds_the_rest_frozen_and_approve_releases_them(
        stack: Any, wait_for: Any) -> None:
    from tests.integration.test_joiners_movers import _start

    stack.env.update(GUARD_ENV)
    expected = _link_scope_members(stack)
    assert len(expected) > MAX_COUNT + 10, "the scenario needs a mass deprovisioning"
    running = _start(stack, wait_for)  # webhook, both workers, beat (which subscribes to users and groups)

    _delete_scope_group(running)

    def all_handled() -> bool:
        outcomes = _outcomes(running, set(expected))
        return len(outcomes) == len(expected) and all(o[-1] in ("revoked", "frozen_held") for o in outcomes.values())

    wait_for(all_handled, timeout=180, interval=0.5, what="every member of the deleted group deprovisioned or held")
    deactivated, active = _state(running, expected)
    assert len(deactivated) == MAX_COUNT  # the guard let exactly the limit through...
    assert len(active) == len(expected) - MAX_COUNT  # ...and held every other one
    assert _frozen(running, list(expected.values())) == set(expected.values())  # all of them locked out at once
    held = {e for e, sf in expected.items() if sf in active}
    assert {r["entra_id"] for r in running.audit("guard_held")} == held
    assert not held & {t["entra_id"] for t in running.audit("transfer_ownership")}  # their records wait too

    status = _idsync(running, "status", "--json")
    assert status.returncode == 0, status.stderr
    guard = json.loads(status.stdout)["guard"]
    [run] = guard["held_runs"]
    assert (run["mode"], run["count"], guard["held_users"]) == ("live", len(held), len(held))
    assert run["run_id"].startswith("live-") and "exceed the limit of 5" in run["reason"]
    shown = _idsync(running, "status")
    assert "DEACTIVATIONS HELD" in shown.stdout and run["run_id"] in shown.stdout

    _approve_and_wait(running, wait_for, run["run_id"], expected, held)


@pytest.mark.timeout(600)
def test_reconcile_a_run_over_the_limit_is_held_as_a_whole_frozen_not_deactivated_until_approved(
        stack: Any, wait_for: Any) -> None:
    from shared.deprovision_guard import DeprovisionGuard

    stack.env.update(GUARD_ENV)
    expected = _link_scope_members(stack)
    stack.start_worker("revocation")
    stack.start_worker("sync")
    _delete_scope_group(stack)  # nobody listens: the next reconcile run finds the mistake

    done = _idsync(stack, "reconcile", "--report", "run.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((stack.tmp / "run.json").read_text())
    run_id = report["run_id"]
    assert report["counts"]["deprovision"] >= len(expected) > MAX_COUNT
    assert report["guard"]["held"] and "exceed the limit of 5" in report["guard"]["reason"]
    assert "HELD by the mass-deprovisioning guard" in done.stdout and f"idsync approve {run_id}" in done.stdout

    wait_for(lambda: (o := _outcomes(stack, set(expected))) and len(o) == len(expected), timeout=120, interval=0.5,
             what="every deprovisioning of the run handled")
    assert {o[-1] for o in _outcomes(stack, set(expected)).values()} == {"frozen_held"}
    assert _state(stack, expected) == (set(), set(expected.values()))  # nobody deactivated
    assert _frozen(stack, list(expected.values())) == set(expected.values())  # everybody locked out
    guard = DeprovisionGuard(stack.redis, stack.settings())
    [run] = guard.held_runs()
    assert (run.run_id, run.mode) == (run_id, "reconcile") and run.count >= len(expected)

    _approve_and_wait(stack, wait_for, run_id, expected, {e for e in expected})
