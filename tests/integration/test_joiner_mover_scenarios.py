"""200 joiners and 100 movers through the real pipeline converge to exactly the desired state.

Joiners arrive in every demo group, some only through a nested group, some before their manager; movers change
groups, get promoted, change managers and are renamed (a new UPN). Convergence is checked with THE engine itself:
once every notification has been worked off, planning every one of these users against Salesforce (a dry run)
must find nothing left to change.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.admin_clients import GraphAdmin, OrgAdmin
from sandbox.server import SandboxServer

pytestmark = pytest.mark.integration

GROUPS = ["Sales Team West", "Sales Team East", "Customer Support", "Marketing", None]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=400, groups=13, seed=47, overlap=0.5)
    server.state.config.patch({"graph": {"notification_retry_base_s": 0.5}})
    server.start()
    # seats for the 200 joiners (the seed sizes licences to the seeded tenant; a shortage is its own test)
    server.state.org.set_total_licenses("Salesforce", 5000)
    server.state.org.set_total_licenses("SalesCloudUserPsl", 5000)
    try:
        yield server
    finally:
        server.stop()


def _deps(stack: Any) -> Any:
    from shared.graph_client import GraphClient
    from shared.provisioning.batch import SyncDeps
    from shared.provisioning.catalog_reader import CatalogCache
    from shared.provisioning.mapping_store import EXAMPLE_MAPPING, MappingStore
    from shared.salesforce_client import SalesforceClient

    settings = stack.settings()
    return SyncDeps(settings, stack.redis, GraphClient(settings), SalesforceClient(settings),
                    MappingStore(EXAMPLE_MAPPING, None), CatalogCache(), None)


def _left_to_do(deps: Any, ids: list[str]) -> dict[str, list[str]]:
    """The users whose plan still has changes (dry run: nothing is written), with what is left."""
    from shared.provisioning.batch import sync_users

    left: dict[str, list[str]] = {}
    for start in range(0, len(ids), 200):
        report = sync_users(deps, ids[start : start + 200], dry_run=True)
        for entra_id, plan in report.plans.items():
            if plan.changes:
                left[entra_id] = [f"{c.kind.value}:{c.target}" for c in plan.changes]
    return left


@pytest.mark.timeout(900)
def test_200_joiners_and_100_movers_converge_to_exactly_the_desired_state(stack: Any, wait_for: Any) -> None:
    from tests.integration.test_joiners_movers import _start

    running = _start(stack, wait_for)
    tenant, org = GraphAdmin(running.env), OrgAdmin(running.env)
    rng = random.Random(7)
    domain = tenant.verified_domain()
    started = time.monotonic()

    # a nested group: members of "Regional Sales West" are Sales Team West members transitively
    regional = tenant.http.post("/groups", json={"displayName": "Regional Sales West", "mailEnabled": False,
                                                 "mailNickname": "regional-sales-west", "securityEnabled": True}
                                ).raise_for_status().json()
    tenant.http.post(f"/groups/{tenant.group('Sales Team West')['id']}/members/$ref",
                     json={"@odata.id": f"{tenant.http.base_url}/directoryObjects/{regional['id']}"}
                     ).raise_for_status()

    # --- 200 joiners
    joiners: list[dict[str, Any]] = []
    for n in range(200):
        upn = f"joiner{n:03d}@{domain}"
        user = tenant.create_user("Joiner", f"Number{n:03d}", upn, jobTitle=rng.choice(["Analyst", "Engineer"]),
                                  department=rng.choice(["Sales", "Support", "Marketing"]), employeeId=f"J{n:05d}",
                                  usageLocation=rng.choice(["US", "GB", "DE"]))
        tenant.add_to_group(user["id"], "All Employees")
        group = GROUPS[n % len(GROUPS)]
        if n % 25 == 3:
            tenant.add_to_group(user["id"], "Regional Sales West")  # only through nesting
        elif group:
            tenant.add_to_group(user["id"], group)
        joiners.append(user)
    for n in range(0, 200, 10):  # managers: some later joiners manage earlier ones (the manager arrives later)
        tenant.set_manager(joiners[n]["id"], joiners[(n + 17) % 200]["id"])

    # --- 100 movers among the seeded members already in Salesforce
    members = [u for u in tenant.users("accountEnabled eq true and userType eq 'Member'")
               if org.user(u["userPrincipalName"]) is not None]
    movers = rng.sample(members, 100)
    for n, user in enumerate(movers):
        kind = n % 4
        if kind == 0 and "Customer Support" not in tenant.groups_of(user["id"]):
            tenant.add_to_group(user["id"], "Customer Support")
        elif kind in (0, 1):
            tenant.update(user["id"], {"jobTitle": "Senior " + rng.choice(["Manager", "Engineer", "Consultant"])})
        elif kind == 2:
            tenant.set_manager(user["id"], rng.choice(joiners)["id"])
        else:
            local = user["userPrincipalName"].split("@")[0]
            tenant.update(user["id"], {"userPrincipalName": f"{local}.renamed@{domain}"})
    changes_made = time.monotonic() - started

    deps = _deps(running)
    ids = [u["id"] for u in joiners] + [u["id"] for u in movers]
    from shared.dirty_users import DirtyUsers

    backlog = DirtyUsers(running.redis)

    left: dict[str, list[str]] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if backlog.pending() == 0 and backlog.in_flight() == 0:
            left = _left_to_do(deps, ids)
            if not left:
                break
        time.sleep(2)
    assert left == {}, f"{len(left)} users not converged, e.g. {list(left.items())[:5]}"
    print(f"\n300 users changed in {changes_made:.1f} s; converged {time.monotonic() - started:.1f} s after the first")

    # concrete spot checks of what convergence means
    nested = joiners[3]  # n % 25 == 3: only in the nested group
    view = org.view(nested["userPrincipalName"])
    assert view is not None and (view["Profile"], view["Role"]) == ("Sales User", "Account Executive West")
    renamed = next(u for n, u in enumerate(movers) if n % 4 == 3)
    new_upn = f"{renamed['userPrincipalName'].split('@')[0]}.renamed@{domain}"
    view = org.view(new_upn)
    assert view is not None and view["FederationIdentifier"] == new_upn
    late = joiners[0]  # managed by joiner 17, created after it
    late_view = org.view(late["userPrincipalName"])
    assert late_view is not None and late_view["Manager"] == joiners[17]["userPrincipalName"]
    assert running.redis.hlen("idsync:dlq:entries") == 0
