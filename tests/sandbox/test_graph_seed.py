"""The seeded Entra tenant: the same flags give the same tenant, and a group added to the seed list changes nothing
that was seeded before it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sandbox.graph.seed import GROUP_NAMES, _members_for, seed_directory
from sandbox.graph.store import Directory
from sandbox.state import SandboxState


def _tenant(tmp: Path, *, users: int, groups: int, seed: int) -> dict[str, Any]:
    state = SandboxState(state_dir=tmp)
    state.directory = Directory(state)
    seed_directory(state, users=users, groups=groups, seed=seed)
    d = state.directory
    return {
        "users": [dict(u) for u in d.users.values()],
        "groups": [(g["id"], g["displayName"], sorted(d.members.get(g["id"], {}))) for g in d.groups.values()],
    }


def test_distributors_is_the_last_named_group_so_the_first_thirteen_keep_their_places():
    assert GROUP_NAMES[-1] == "Distributors" and len(GROUP_NAMES) == 14
    assert GROUP_NAMES[8] == "Marketing" and GROUP_NAMES[12] == "Guests"


def test_fourteen_groups_are_the_thirteen_of_before_plus_an_empty_distributors_group(tmp_path: Path):
    for seed in (1, 7, 47):
        thirteen = _tenant(tmp_path / f"13-{seed}", users=120, groups=13, seed=seed)
        fourteen = _tenant(tmp_path / f"14-{seed}", users=120, groups=14, seed=seed)
        assert fourteen["users"] == thirteen["users"]
        assert fourteen["groups"][:13] == thirteen["groups"]
        (_id, name, members), = fourteen["groups"][13:]
        assert (name, members) == ("Distributors", [])


def test_seeding_distributors_draws_nothing_from_the_random_stream():
    rng = random.Random(3)
    member = {"id": "u1", "userType": "Member", "department": "Sales", "officeLocation": "Austin",
              "jobTitle": "Account Executive", "employeeType": "Employee"}
    before = rng.getstate()
    assert _members_for("Distributors", [member], {"Austin": "Central"}, set(), rng) == []
    assert rng.getstate() == before


def test_groups_beyond_the_named_ones_are_project_teams(tmp_path: Path):
    names = [name for _id, name, _members in _tenant(tmp_path, users=30, groups=16, seed=1)["groups"]]
    assert names == [*GROUP_NAMES, "Project Team 1", "Project Team 2"]
