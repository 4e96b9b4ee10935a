"""The seeded org: reproducible from the seed, holding the configured share of the tenant's users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.salesforce import install
from sandbox.salesforce.seed import seed_org
from sandbox.state import SandboxState


def tenant(n: int) -> list[dict[str, Any]]:
    return [{"id": f"00000000-0000-0000-0000-{i:012d}", "userPrincipalName": f"user{i}@contoso.example.com",
             "mail": f"user{i}@contoso.example.com", "givenName": "Given", "surname": f"Sur{i}",
             "displayName": f"Given Sur{i}", "employeeId": str(i), "department": "Sales", "jobTitle": "Rep",
             "accountEnabled": True, "userType": "Guest" if i % 10 == 9 else "Member"} for i in range(n)]


def seeded(tmp_path: Path, seed: int) -> SandboxState:
    state = SandboxState(state_dir=tmp_path / f"s{seed}")
    install(state)
    seed_org(state, tenant_users=tenant(200), seed=seed, overlap=0.3)
    return state


def test_same_seed_gives_the_same_users_and_ids(tmp_path):
    a, b = seeded(tmp_path, 5), seeded(tmp_path / "b", 5)
    rows = lambda s: sorted((u["Id"], u["Username"], u["IsActive"], u["FederationIdentifier"])  # noqa: E731
                            for u in s.org.records("User"))
    assert rows(a) == rows(b)


def test_overlap_share_of_member_users_is_present_with_upn_usernames(tmp_path):
    state = seeded(tmp_path, 9)
    upns = {u["userPrincipalName"] for u in tenant(200) if u["userType"] == "Member"}
    present = [u for u in state.org.records("User") if u["Username"] in upns]
    assert len(present) == round(180 * 0.3)
    assert sum(1 for u in present if u["FederationIdentifier"] == u["Username"]) > len(present) // 2


def test_seed_marks_a_default_lead_owner_who_cannot_be_deactivated(tmp_path):
    state = seeded(tmp_path, 2)
    owner = state.org.seed_info["default_lead_owner_id"]
    assert state.org.deactivation_blockers[owner] == "default_lead_owner"
    assert state.org.live["User"][owner]["IsActive"] is True


@pytest.mark.parametrize(("users", "seed"), [(20, 1), (50, 1), (50, 2), (50, 3), (137, 4), (500, 5)])
def test_a_seeded_sandbox_has_two_entra_leavers_still_active_in_salesforce(tmp_path, users, seed):
    """What the README promises: a first `make run` shows revocations before anyone does anything."""
    from sandbox import graph
    from sandbox.server import seed as seed_sandbox

    state = SandboxState(state_dir=tmp_path / "s")
    state.base_url = "https://testserver"
    graph.install(state)
    install(state)
    seed_sandbox(state, users=users, groups=8, seed=seed, overlap=0.3)
    disabled = {u["userPrincipalName"] for u in state.directory.users.values()
                if u["accountEnabled"] is False and u["userType"] == "Member"}
    active = {u["Username"] for u in state.org.records("User") if u["IsActive"]}
    assert len(disabled & active) >= 2


def test_the_leavers_do_not_change_the_rest_of_the_seeded_org(tmp_path):
    """The leavers are swapped in without touching the random stream: the org's size and CRM data stay put."""
    users = tenant(200)
    users[3]["accountEnabled"] = users[5]["accountEnabled"] = False
    plain, with_leavers = SandboxState(state_dir=tmp_path / "a"), SandboxState(state_dir=tmp_path / "b")
    install(plain)
    install(with_leavers)
    seed_org(plain, tenant_users=tenant(200), seed=3, overlap=0.3)
    seed_org(with_leavers, tenant_users=users, seed=3, overlap=0.3)
    count = lambda s, name: len(list(s.org.records(name)))  # noqa: E731
    for sobject in ("User", "Account", "Opportunity", "Lead", "Case"):
        assert count(plain, sobject) == count(with_leavers, sobject)
    present = {u["Username"]: u for u in with_leavers.org.records("User")}
    assert present["user3@contoso.example.com"]["IsActive"] and present["user5@contoso.example.com"]["IsActive"]


def test_the_seeded_org_has_drift_for_a_reconciliation_to_show(tmp_path) -> None:
    """Titles and departments edited by hand by the human admin, and at least one enabled member switched off."""
    from sandbox.server import SandboxServer

    server = SandboxServer(tmp_path, users=50, groups=13, seed=1, overlap=0.3)
    server.start()
    try:
        org, directory = server.state.org, server.state.directory
        admin = org.seed_info["admin_user_id"]
        by_upn = {str(u["userPrincipalName"]).lower(): u for u in directory.users.values()}
        edited = switched_off = 0
        for record in org.live["User"].values():
            entra = by_upn.get(str(record["Username"]).lower())
            if entra is None:
                continue
            if record["LastModifiedById"] == admin and record.get("Title") != entra.get("jobTitle"):
                edited += 1
            if entra.get("accountEnabled") and record["IsActive"] is False:
                switched_off += 1
        assert edited >= 1 and switched_off >= 1
    finally:
        server.stop()
