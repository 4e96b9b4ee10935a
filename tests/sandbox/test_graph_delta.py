"""Delta queries for users and groups, including duplicates, replays, split groups and expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sandbox import graph
from sandbox.graph.identity import issue_token
from sandbox.graph.seed import seed_directory
from sandbox.server import SandboxServer
from sandbox.state import SandboxState


class Tenant:
    def __init__(self, tmp: Path, users: int = 40) -> None:
        self.state = SandboxState(state_dir=tmp)
        self.state.base_url = "https://testserver"
        app = Starlette(routes=graph.install(self.state))
        seed_directory(self.state, users=users, groups=8, seed=11)
        self.d = self.state.directory
        self.client = TestClient(app, base_url="https://testserver")
        self.headers = {"Authorization": f"Bearer {issue_token(self.state)[0]}"}

    def get(self, url: str, **headers: str) -> httpx.Response:
        return self.client.get(url, headers={**self.headers, **headers})

    def round(self, url: str, **headers: str) -> tuple[list[list[dict[str, Any]]], str]:
        """Follow nextLinks to the deltaLink; returns the pages' values and the deltaLink."""
        pages = []
        while True:
            r = self.get(url, **headers)
            assert r.status_code == 200, r.text
            body = r.json()
            pages.append(body["value"])
            if "@odata.deltaLink" in body:
                assert "@odata.nextLink" not in body
                return pages, body["@odata.deltaLink"]
            url = body["@odata.nextLink"]

    def items(self, url: str, **headers: str) -> tuple[list[dict[str, Any]], str]:
        pages, link = self.round(url, **headers)
        return [i for p in pages for i in p], link

    def some_user(self, n: int = 0) -> str:
        return [u for u in self.d.users if self.d.users[u]["userType"] == "Member"][n]


@pytest.fixture
def t(tmp_path: Path) -> Tenant:
    return Tenant(tmp_path)


def test_delta_round_over_https_follows_skiptoken_next_links_to_a_deltatoken_delta_link(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    state = sandbox.state
    state.config.set("graph.delta_page_size", 7)
    try:
        headers = {"Authorization": f"Bearer {issue_token(state)[0]}"}
        url: str = "/v1.0/users/delta?$select=displayName,accountEnabled"
        ids: list[str] = []
        pages = 0
        while True:
            body = http.get(url, headers=headers).json()
            pages += 1
            ids += [u["id"] for u in body["value"]]
            if "@odata.deltaLink" in body:
                assert "$deltatoken=" in body["@odata.deltaLink"]
                break
            assert "$skiptoken=" in body["@odata.nextLink"]
            url = body["@odata.nextLink"]
        assert pages >= 60 // 7
        assert set(ids) >= set(state.directory.users) - set(state.directory.deleted_users)
    finally:
        state.config.set("graph.delta_page_size", 200)


@pytest.mark.parametrize("form", ["delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"])
def test_every_documented_url_form_of_users_and_groups_delta_works(t: Tenant, form: str) -> None:
    users, _ = t.items(f"/v1.0/users/{form}")
    groups, _ = t.items(f"/v1.0/groups/{form}")
    assert {u["id"] for u in users} == set(t.d.users)
    assert {g["id"] for g in groups} == set(t.d.groups)


def test_page_size_is_server_chosen_and_top_is_ignored(t: Tenant) -> None:
    t.state.config.set("graph.delta_page_size", 15)
    pages, _ = t.round("/v1.0/users/delta?$top=2")
    assert [len(p) for p in pages] == [15, 15, 10]


def test_initial_round_gives_default_properties_and_accepts_camel_case_tokens(t: Tenant) -> None:
    t.state.config.set("graph.delta_page_size", 30)
    first = t.get("/v1.0/users/delta").json()
    assert "accountEnabled" not in first["value"][0] and "userPrincipalName" in first["value"][0]
    token = first["@odata.nextLink"].split("$skiptoken=")[1]
    second = t.get(f"/v1.0/users/delta?$skipToken={token}").json()
    assert len(first["value"]) + len(second["value"]) == 40
    token = second["@odata.deltaLink"].split("$deltatoken=")[1]
    assert t.get(f"/v1.0/users/delta?$deltaToken={token}").json()["value"] == []


def test_a_change_to_an_unselected_property_does_not_make_the_user_appear(t: Tenant) -> None:
    _, link = t.items("/v1.0/users/delta?$select=displayName,jobTitle")
    quiet, loud = t.some_user(0), t.some_user(1)
    t.d.update_user(quiet, {"department": "Somewhere Else"})
    t.d.update_user(loud, {"jobTitle": "Head of Deltas"})
    items, _ = t.items(link)
    assert [i["id"] for i in items] == [loud]
    assert items[0]["jobTitle"] == "Head of Deltas" and "department" not in items[0]


def test_disabling_a_user_is_a_plain_update_visible_only_when_account_enabled_is_tracked(t: Tenant) -> None:
    _, tracked = t.items("/v1.0/users/delta?$select=displayName,accountEnabled")
    _, untracked = t.items("/v1.0/users/delta?$select=displayName")
    _, everything = t.items("/v1.0/users/delta")
    uid = t.some_user(2)
    t.d.update_user(uid, {"accountEnabled": False})
    items, _ = t.items(tracked)
    assert items == [{"id": uid, "displayName": t.d.users[uid]["displayName"], "accountEnabled": False}]
    assert t.items(untracked)[0] == []
    items, _ = t.items(everything)
    assert [(i["id"], i["accountEnabled"], "@removed" in i) for i in items] == [(uid, False, False)]


def test_soft_delete_is_removed_changed_and_hard_delete_is_removed_deleted(t: Tenant) -> None:
    _, link = t.items("/v1.0/users/delta?$select=displayName")
    uid = t.some_user(3)
    t.d.soft_delete_user(uid)
    items, link = t.items(link)
    assert items == [{"id": uid, "@removed": {"reason": "changed"}}]
    t.d.hard_delete(uid)
    items, _ = t.items(link)
    assert items == [{"id": uid, "@removed": {"reason": "deleted"}}]


def test_a_restored_user_comes_back_in_full_without_annotation(t: Tenant) -> None:
    _, link = t.items("/v1.0/users/delta?$select=displayName,mail")
    uid = t.some_user(4)
    t.d.soft_delete_user(uid)
    _, link = t.items(link)
    t.d.restore(uid)
    items, _ = t.items(link)
    assert items == [{"id": uid, "displayName": t.d.users[uid]["displayName"], "mail": t.d.users[uid]["mail"]}]


def test_updates_carry_all_selected_properties_unless_prefer_return_minimal(t: Tenant) -> None:
    _, link = t.items("/v1.0/users/delta?$select=displayName,jobTitle,department")
    uid = t.some_user(5)
    t.d.update_user(uid, {"jobTitle": "Changed"})
    full, _ = t.items(link)
    assert set(full[0]) == {"id", "displayName", "jobTitle", "department"}
    minimal, _ = t.items(link, Prefer="return=minimal")
    assert minimal == [{"id": uid, "jobTitle": "Changed"}]


def test_manager_changes_arrive_as_manager_delta_when_manager_is_selected(t: Tenant) -> None:
    _, link = t.items("/v1.0/users/delta?$select=displayName,manager")
    uid, boss = t.some_user(6), t.some_user(7)
    t.d.set_manager(uid, boss)
    items, _ = t.items(link)
    assert items == [
        {
            "id": uid,
            "displayName": t.d.users[uid]["displayName"],
            "manager@delta": [{"@odata.type": "#microsoft.graph.user", "id": boss}],
        }
    ]


def test_a_large_groups_members_delta_is_split_across_pages_and_the_group_repeats(tmp_path: Path) -> None:
    t = Tenant(tmp_path, users=120)
    t.state.config.set("graph.group_members_page_size", 10)
    everyone = next(g for g in t.d.groups.values() if g["displayName"] == "All Employees")
    pages, link = t.round("/v1.0/groups/delta?$select=displayName,members")
    slices = [(n, i) for n, page in enumerate(pages) for i in page if i["id"] == everyone["id"]]
    assert len({n for n, _ in slices}) == len(slices) > 1  # one slice per page, on several pages
    assert all(i["displayName"] == "All Employees" for _, i in slices)
    members = [m["id"] for _, i in slices for m in i["members@delta"]]
    assert sorted(members) == sorted(t.d.members[everyone["id"]])
    leaver = members[0]
    t.d.remove_member(everyone["id"], leaver)
    items, _ = t.items(link)
    assert items == [
        {
            "id": everyone["id"],
            "displayName": "All Employees",
            "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": leaver, "@removed": {"reason": "deleted"}}
            ],
        }
    ]


def test_deltatoken_latest_returns_only_a_delta_link_that_sees_later_changes(t: Tenant) -> None:
    body = t.get("/v1.0/users/delta?$deltatoken=latest&$select=jobTitle").json()
    assert body["value"] == [] and "@odata.nextLink" not in body
    uid = t.some_user(8)
    t.d.update_user(uid, {"jobTitle": "Fresh"})
    items, _ = t.items(body["@odata.deltaLink"])
    assert items == [{"id": uid, "jobTitle": "Fresh"}]


def test_filter_by_ids_limits_the_round_and_more_than_50_ids_is_400(t: Tenant) -> None:
    a, b = t.some_user(0), t.some_user(1)
    items, _ = t.items(f"/v1.0/users/delta?$filter=id eq '{a}' or id eq '{b}'&$select=displayName")
    assert sorted(i["id"] for i in items) == sorted([a, b])
    clause = " or ".join(f"id eq '{a}'" for _ in range(51))
    assert t.get(f"/v1.0/users/delta?$filter={clause}").status_code == 400
    assert t.get("/v1.0/users/delta?$filter=displayName eq 'x'").status_code == 400


def test_duplicate_injection_repeats_items_within_one_round(t: Tenant) -> None:
    t.state.config.patch({"graph": {"delta_duplicate_rate": 1.0, "delta_page_size": 10}})
    items, _ = t.items("/v1.0/users/delta?$select=displayName")
    ids = [i["id"] for i in items]
    assert len(ids) == 2 * len(set(ids)) == 80


def test_replay_injection_repeats_the_previous_rounds_changes_in_the_next_round(t: Tenant) -> None:
    t.state.config.set("graph.delta_replay_rate", 1.0)
    _, link = t.items("/v1.0/users/delta?$deltatoken=latest&$select=jobTitle")
    _, link = t.items(link)  # an empty round: from here on rounds remember what they delivered
    first, second = t.some_user(0), t.some_user(1)
    t.d.update_user(first, {"jobTitle": "Round one"})
    items, link = t.items(link)
    assert [i["id"] for i in items] == [first]
    t.d.update_user(second, {"jobTitle": "Round two"})
    items, _ = t.items(link)
    assert sorted(i["id"] for i in items) == sorted([first, second])


def test_tokens_older_than_seven_days_are_410_with_a_location_to_restart(t: Tenant) -> None:
    _, link = t.items("/v1.0/users/delta?$select=displayName")
    t.state.clock.advance(8 * 86400)
    t.headers = {"Authorization": f"Bearer {issue_token(t.state)[0]}"}
    r = t.get(link)
    assert r.status_code == 410
    assert r.json()["error"]["code"] == "syncStateNotFound"
    location = r.headers["Location"]
    assert location.endswith("$deltatoken=") and "$select=displayName" in location
    items, _ = t.items(location)
    assert len(items) == 40


def test_group_delta_initial_round_lists_members_and_groups_without_members_omit_them(t: Tenant) -> None:
    empty = t.d.create_group(
        {"displayName": "Empty", "mailEnabled": False, "mailNickname": "empty", "securityEnabled": True}
    )
    items, _ = t.items("/v1.0/groups/delta")
    by_id = {i["id"]: i for i in items}
    assert "members@delta" not in by_id[empty["id"]]
    for gid, members in t.d.members.items():
        if members:
            assert {m["id"] for m in by_id[gid]["members@delta"]} == set(members)
