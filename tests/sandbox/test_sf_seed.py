"""The seeded org: reproducible from the seed, holding the configured share of the tenant's users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
