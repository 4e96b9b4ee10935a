"""Graph directory reads and writes (throttling, users, groups) against the Graph routes in-process (fast, isolated
state)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sandbox import graph
from sandbox.graph.identity import issue_token
from sandbox.graph.seed import seed_directory
from sandbox.state import SandboxState


class Graph:
    """A TestClient bound to one fresh seeded tenant, with a valid app token."""

    def __init__(self, tmp: Path, users: int = 60) -> None:
        self.state = SandboxState(state_dir=tmp)
        self.state.base_url = "https://testserver"
        app = Starlette(routes=graph.install(self.state))
        seed_directory(self.state, users=users, groups=8, seed=7)
        self.client = TestClient(app, base_url="https://testserver")
        token, _ = issue_token(self.state)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, url: str, **headers: str) -> Any:
        return self.client.get(url, headers={**self.headers, **headers})

    def post(self, url: str, body: Any) -> Any:
        return self.client.post(url, json=body, headers=self.headers)

    def patch(self, url: str, body: Any) -> Any:
        return self.client.patch(url, json=body, headers=self.headers)

    def put(self, url: str, body: Any) -> Any:
        return self.client.put(url, json=body, headers=self.headers)

    def delete(self, url: str) -> Any:
        return self.client.delete(url, headers=self.headers)

    def new_user(self, alias: str, **extra: Any) -> dict[str, Any]:
        domain = self.state.directory.verified_domains[-1]
        body = {
            "accountEnabled": True,
            "displayName": alias.title(),
            "mailNickname": alias,
            "userPrincipalName": f"{alias}@{domain}",
            "passwordProfile": {"password": "P@ssw0rd!x", "forceChangePasswordNextSignIn": True},
            **extra,
        }
        r = self.post("/v1.0/users", body)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def g(tmp_path: Path) -> Iterator[Graph]:
    yield Graph(tmp_path)


def test_users_page_with_top_and_skiptoken_next_links_cover_everyone_once(g: Graph) -> None:
    seen: list[str] = []
    url: str | None = "/v1.0/users?$top=7&$select=id,displayName"
    pages = 0
    while url:
        body = g.get(url).json()
        assert len(body["value"]) <= 7
        seen += [u["id"] for u in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert "$skiptoken=" in url and "$top=7" in url
        pages += 1
    assert pages == 9
    assert sorted(seen) == sorted(g.state.directory.users)


def test_default_page_size_is_100_and_top_1000_is_rejected_with_the_documented_message(tmp_path: Path) -> None:
    g = Graph(tmp_path, users=130)
    assert len(g.get("/v1.0/users").json()["value"]) == 100
    r = g.get("/v1.0/users?$top=1000")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."


def _follow(g: Graph, url: str) -> list[dict[str, Any]]:
    """Every page of a collection read by following `@odata.nextLink`, as a client would."""
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = g.get(next_url.removeprefix("https://testserver")).json()
        pages.append(body)
        next_url = body.get("@odata.nextLink")
    return pages


def test_expand_caps_a_999_page_at_100_and_the_next_links_still_reach_every_user(tmp_path: Path) -> None:
    """Real Graph answers `$expand` on a directory collection 100 objects a page whatever `$top` asks (known issue
    13635; users report exactly 100 for `/users?$expand=manager&$top=999`); the rest comes behind nextLinks."""
    g = Graph(tmp_path, users=250)
    directory = g.state.directory
    pages = _follow(g, "/v1.0/users?$select=id,displayName&$expand=manager($select=id)&$top=999")
    assert [len(p["value"]) for p in pages] == [100, 100, len(directory.users) - 200]
    for page in pages[:-1]:
        link = unquote(page["@odata.nextLink"])
        assert "$top=999" in link and "$expand=manager($select=id)" in link and "$skiptoken=" in link
    users = [u for p in pages for u in p["value"]]
    assert sorted(u["id"] for u in users) == sorted(directory.users)
    assert all((u.get("manager") or {}).get("id") == directory.manager_of(u["id"]) for u in users)


def test_without_expand_top_999_is_honoured_in_one_page(tmp_path: Path) -> None:
    g = Graph(tmp_path, users=250)
    body = g.get("/v1.0/users?$select=id,displayName&$top=999").json()
    assert len(body["value"]) == len(g.state.directory.users) > 100
    assert "@odata.nextLink" not in body


def test_top_below_100_with_expand_is_kept_as_asked(tmp_path: Path) -> None:
    g = Graph(tmp_path, users=250)
    pages = _follow(g, "/v1.0/users?$select=id&$expand=manager($select=id)&$top=50")
    assert {len(p["value"]) for p in pages[:-1]} == {50}
    assert sum(len(p["value"]) for p in pages) == len(g.state.directory.users)


def test_filtered_reads_with_expand_are_capped_too_and_the_15_id_batch_read_is_untouched(tmp_path: Path) -> None:
    """A `$filter` goes through the same list, so an expanded filtered read pages 100 at most; the product's
    `users_by_ids` reads (`id in (...)`, 15 ids, `$top=15`) ask for fewer than 100 and come back whole."""
    g = Graph(tmp_path, users=250)
    directory = g.state.directory
    enabled = sorted(u["id"] for u in directory.users.values() if u.get("accountEnabled") is not False)
    assert len(enabled) > 100
    pages = _follow(g, "/v1.0/users?$filter=accountEnabled eq true&$select=id&$expand=manager($select=id)&$top=999")
    assert len(pages[0]["value"]) == 100 and sorted(u["id"] for p in pages for u in p["value"]) == enabled
    ids = enabled[:15]
    quoted = ",".join(f"'{i}'" for i in ids)
    body = g.get(f"/v1.0/users?$filter=id in ({quoted})&$select=id&$top=15&$expand=manager($select=id)").json()
    assert sorted(u["id"] for u in body["value"]) == ids and "@odata.nextLink" not in body


def test_an_expanded_direct_reports_or_member_of_list_stops_at_20_items_without_a_next_link(g: Graph) -> None:
    """Graph documents that `$expand` on a directory object's relationship returns at most 20 items and no nextLink
    (https://learn.microsoft.com/graph/query-parameters#expand); the relationship's own route pages the rest."""
    boss = g.new_user("walter.skinner")
    directory = g.state.directory
    reports = [g.new_user(f"agent.{n}") for n in range(25)]
    for report in reports:
        directory.set_manager(report["id"], boss["id"])
    for n in range(25):
        group = directory.create_group(
            {"displayName": f"Task Force {n}", "mailEnabled": False, "mailNickname": f"tf{n}", "securityEnabled": True}
        )
        directory.add_member(group["id"], boss["id"])
    one = g.get(f"/v1.0/users/{boss['id']}?$expand=directReports").json()
    assert len(one["directReports"]) == 20 and "directReports@odata.nextLink" not in one
    listed = g.get(f"/v1.0/users?$filter=id eq '{boss['id']}'&$expand=memberOf").json()["value"][0]
    assert len(listed["memberOf"]) == 20 and "memberOf@odata.nextLink" not in listed
    assert len(_follow(g, f"/v1.0/users/{boss['id']}/directReports?$top=999")[0]["value"]) == 25
    assert len(_follow(g, f"/v1.0/users/{boss['id']}/memberOf?$top=999")[0]["value"]) == 25


def test_without_select_only_the_default_properties_come_back(g: Graph) -> None:
    user = g.get("/v1.0/users?$top=1").json()["value"][0]
    assert set(user) == {
        "id",
        "businessPhones",
        "displayName",
        "givenName",
        "jobTitle",
        "mail",
        "mobilePhone",
        "officeLocation",
        "preferredLanguage",
        "surname",
        "userPrincipalName",
    }
    selected = g.get(f"/v1.0/users/{user['id']}?$select=accountEnabled,employeeOrgData").json()
    assert set(selected) - {"@odata.context"} == {"id", "accountEnabled", "employeeOrgData"}


def test_select_of_a_property_stored_outside_the_directory_is_501(g: Graph) -> None:
    r = g.get("/v1.0/users?$select=skills")
    assert (r.status_code, r.json()["error"]["code"]) == (501, "NotImplemented")
    r = g.get("/v1.0/users?$select=favouriteColour")
    assert r.status_code == 400


def test_filter_forms_eq_startswith_in_and_or_and_nested_properties(g: Graph) -> None:
    users = list(g.state.directory.users.values())
    target = users[3]
    by_upn = g.get(f"/v1.0/users?$filter=userPrincipalName eq '{target['userPrincipalName'].upper()}'").json()
    assert [u["id"] for u in by_upn["value"]] == [target["id"]]
    prefix = target["displayName"][:2]
    starts = g.get(f"/v1.0/users?$filter=startswith(displayName,'{prefix}')&$top=999").json()["value"]
    assert {u["id"] for u in starts} == {u["id"] for u in users if u["displayName"].startswith(prefix)}
    ids = [users[1]["id"], users[2]["id"]]
    r = g.get(f"/v1.0/users?$filter=id in ('{ids[0]}','{ids[1]}')").json()["value"]
    assert sorted(u["id"] for u in r) == sorted(ids)
    cc = users[0]["employeeOrgData"]["costCenter"]
    q = f"employeeOrgData/costCenter eq '{cc}' and (accountEnabled eq true or userType eq 'Guest')"
    r = g.get(f"/v1.0/users?$filter={quote(q)}&$select=id&$top=999").json()["value"]
    expected = {
        u["id"]
        for u in users
        if (u.get("employeeOrgData") or {}).get("costCenter") == cc
        and (u["accountEnabled"] or u["userType"] == "Guest")
    }
    assert {u["id"] for u in r} == expected and expected
    disabled = g.get("/v1.0/users?$filter=accountEnabled eq false&$select=id,accountEnabled").json()["value"]
    assert all(u["accountEnabled"] is False for u in disabled)


def test_advanced_filters_need_consistency_level_eventual_and_count(g: Graph) -> None:
    r = g.get("/v1.0/users?$filter=userType ne 'Guest'")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "Request_UnsupportedQuery")
    r = g.get("/v1.0/users?$filter=userType ne 'Guest'&$count=true&$top=999", ConsistencyLevel="eventual")
    assert r.status_code == 200
    members = [u for u in g.state.directory.users.values() if u["userType"] != "Guest"]
    assert r.json()["@odata.count"] == len(members)


def test_count_needs_consistency_level_eventual(g: Graph) -> None:
    assert g.get("/v1.0/users?$count=true").status_code == 400
    r = g.get("/v1.0/users?$count=true&$top=5", ConsistencyLevel="eventual").json()
    assert r["@odata.count"] == 60 and len(r["value"]) == 5
    r = g.get("/v1.0/users/$count", ConsistencyLevel="eventual")
    assert r.status_code == 200 and r.text == "60"


def test_user_can_be_read_by_upn_including_a_guest_ext_upn(g: Graph) -> None:
    guest = next(u for u in g.state.directory.users.values() if u["userType"] == "Guest")
    assert "#EXT#@" in guest["userPrincipalName"]
    r = g.get(f"/v1.0/users/{quote(guest['userPrincipalName'], safe='@')}")
    assert r.status_code == 200 and r.json()["id"] == guest["id"]


def test_a_batch_item_s_url_is_percent_decoded_like_a_request_s(g: Graph) -> None:
    guest = next(u for u in g.state.directory.users.values() if u["userType"] == "Guest")
    once = quote(guest["userPrincipalName"], safe="@")
    r = g.post("/v1.0/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{once}?$select=id"},
        {"id": "2", "method": "GET", "url": f"/users/{quote(once, safe='@')}?$select=id"},
    ]})
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["id"] == guest["id"]
    assert by_id["2"]["status"] == 404


def test_a_next_link_below_a_guest_s_upn_keeps_the_ext_marker_encoded(g: Graph) -> None:
    guest = next(u for u in g.state.directory.users.values() if u["userType"] == "Guest")
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{guest['id']}"}
    for gid in list(g.state.directory.groups)[:2]:
        assert g.post(f"/v1.0/groups/{gid}/members/$ref", ref).status_code == 204
    first = g.get(f"/v1.0/users/{quote(guest['userPrincipalName'], safe='@')}/memberOf?$top=1").json()
    nxt = first["@odata.nextLink"]
    assert "#" not in nxt and "%23EXT%23@" in nxt
    second = g.get(nxt.removeprefix("https://testserver"))
    assert second.status_code == 200 and len(first["value"]) == len(second.json()["value"]) == 1
    assert first["value"][0]["id"] != second.json()["value"][0]["id"]


def test_creating_a_user_with_a_taken_upn_or_without_a_password_profile_is_400(g: Graph) -> None:
    created = g.new_user("dana.scully")
    dup = g.post(
        "/v1.0/users",
        {
            "accountEnabled": True,
            "displayName": "X",
            "mailNickname": "x",
            "userPrincipalName": created["userPrincipalName"].upper(),
            "passwordProfile": {"password": "P@ssw0rd!x"},
        },
    )
    assert dup.status_code == 400
    assert dup.json()["error"] == {
        **dup.json()["error"],
        "code": "Request_BadRequest",
        "message": "Another object with the same value for property userPrincipalName already exists.",
    }
    domain = g.state.directory.verified_domains[-1]
    missing = g.post(
        "/v1.0/users",
        {"accountEnabled": True, "displayName": "Y", "mailNickname": "y", "userPrincipalName": f"y@{domain}"},
    )
    assert missing.status_code == 400 and "passwordProfile" in missing.json()["error"]["message"]


def test_patch_is_204_and_changes_the_user(g: Graph) -> None:
    user = g.new_user("fox.mulder")
    r = g.patch(f"/v1.0/users/{user['id']}", {"department": "X-Files", "employeeOrgData": {"costCenter": "CC-9"}})
    assert r.status_code == 204 and r.content == b""
    got = g.get(f"/v1.0/users/{user['id']}?$select=department,employeeOrgData").json()
    assert got["department"] == "X-Files" and got["employeeOrgData"] == {"costCenter": "CC-9"}


def test_delete_is_a_soft_delete_that_can_be_restored_or_made_permanent(g: Graph) -> None:
    user = g.new_user("walter.skinner")
    assert g.delete(f"/v1.0/users/{user['id']}").status_code == 204
    assert g.get(f"/v1.0/users/{user['id']}").json()["error"]["code"] == "Request_ResourceNotFound"
    binned = g.get("/v1.0/directory/deletedItems/microsoft.graph.user").json()["value"]
    assert [u["id"] for u in binned] == [user["id"]] and binned[0]["deletedDateTime"]
    assert g.get(f"/v1.0/directory/deletedItems/{user['id']}").json()["@odata.type"] == "#microsoft.graph.user"
    assert g.post(f"/v1.0/directory/deletedItems/{user['id']}/restore", None).status_code == 200
    assert g.get(f"/v1.0/users/{user['id']}").status_code == 200
    g.delete(f"/v1.0/users/{user['id']}")
    assert g.delete(f"/v1.0/directory/deletedItems/{user['id']}").status_code == 204
    assert g.get(f"/v1.0/directory/deletedItems/{user['id']}").status_code == 404
    assert g.post(f"/v1.0/directory/deletedItems/{user['id']}/restore", None).status_code == 404


def test_manager_is_404_until_assigned_with_put_ref(g: Graph) -> None:
    user, boss = g.new_user("monica.reyes"), g.new_user("alvin.kersh")
    r = g.get(f"/v1.0/users/{user['id']}/manager")
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{boss['id']}"}
    assert g.put(f"/v1.0/users/{user['id']}/manager/$ref", ref).status_code == 204
    got = g.get(f"/v1.0/users/{user['id']}/manager").json()
    assert got["id"] == boss["id"] and got["@odata.type"] == "#microsoft.graph.user"
    expanded = g.get(f"/v1.0/users/{user['id']}?$expand=manager").json()
    assert expanded["manager"]["id"] == boss["id"]


def test_invitation_creates_a_pending_guest_that_acceptance_turns_accepted(g: Graph) -> None:
    r = g.post(
        "/v1.0/invitations",
        {"invitedUserEmailAddress": "bob@partner.example.com", "inviteRedirectUrl": "https://myapp.example.com"},
    )
    assert r.status_code == 201
    inv = r.json()
    assert inv["status"] == "PendingAcceptance" and inv["invitedUserType"] == "Guest"
    assert inv["inviteRedeemUrl"].startswith("https://")
    fields = "userPrincipalName,userType,creationType,externalUserState,externalUserStateChangeDateTime"
    guest = g.get(f"/v1.0/users/{inv['invitedUser']['id']}?$select={fields}").json()
    assert guest["userPrincipalName"] == f"bob_partner.example.com#EXT#@{g.state.directory.tenant_domain}"
    assert (guest["userType"], guest["creationType"], guest["externalUserState"]) == (
        "Guest",
        "Invitation",
        "PendingAcceptance",
    )
    g.state.directory.accept_invitation(guest["id"])
    after = g.get(f"/v1.0/users/{guest['id']}?$select=externalUserState").json()
    assert after["externalUserState"] == "Accepted"


def test_group_members_ref_add_remove_memberof_and_transitive_members(g: Graph) -> None:
    outer = g.post(
        "/v1.0/groups", {"displayName": "Outer", "mailEnabled": False, "mailNickname": "outer", "securityEnabled": True}
    ).json()
    inner = g.post(
        "/v1.0/groups", {"displayName": "Inner", "mailEnabled": False, "mailNickname": "inner", "securityEnabled": True}
    ).json()
    user = g.new_user("john.doggett")
    ref = "https://graph.microsoft.com/v1.0/directoryObjects/"
    assert g.post(f"/v1.0/groups/{inner['id']}/members/$ref", {"@odata.id": ref + user["id"]}).status_code == 204
    assert g.post(f"/v1.0/groups/{outer['id']}/members/$ref", {"@odata.id": ref + inner["id"]}).status_code == 204
    again = g.post(f"/v1.0/groups/{inner['id']}/members/$ref", {"@odata.id": ref + user["id"]})
    assert again.status_code == 400
    direct = g.get(f"/v1.0/groups/{outer['id']}/members").json()["value"]
    assert [(m["@odata.type"], m["id"]) for m in direct] == [("#microsoft.graph.group", inner["id"])]
    transitive = {m["id"] for m in g.get(f"/v1.0/groups/{outer['id']}/transitiveMembers").json()["value"]}
    assert transitive == {inner["id"], user["id"]}
    assert [x["id"] for x in g.get(f"/v1.0/users/{user['id']}/memberOf").json()["value"]] == [inner["id"]]
    assert g.delete(f"/v1.0/groups/{inner['id']}/members/{user['id']}/$ref").status_code == 204
    assert g.get(f"/v1.0/groups/{inner['id']}/members").json()["value"] == []


def test_batch_runs_items_independently_and_dependants_of_a_failure_get_424(g: Graph) -> None:
    some = next(iter(g.state.directory.users))
    r = g.post(
        "/v1.0/$batch",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": "/users/00000000-0000-0000-0000-000000000000"},
                {"id": "2", "method": "GET", "url": f"/users/{some}", "dependsOn": ["1"]},
                {"id": "3", "method": "GET", "url": f"users/{some}?$select=displayName"},
                {
                    "id": "4",
                    "method": "PATCH",
                    "url": f"/users/{some}",
                    "body": {"jobTitle": "Chief Batcher"},
                    "headers": {"Content-Type": "application/json"},
                },
            ]
        },
    )
    assert r.status_code == 200
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert by_id["1"]["status"] == 404 and by_id["1"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert by_id["2"]["status"] == 424
    assert by_id["3"]["status"] == 200 and set(by_id["3"]["body"]) >= {"id", "displayName"}
    assert by_id["4"]["status"] == 204 and g.state.directory.users[some]["jobTitle"] == "Chief Batcher"


def test_batch_over_20_requests_or_with_duplicate_ids_is_rejected_whole(g: Graph) -> None:
    many = [{"id": str(i), "method": "GET", "url": "/users?$top=1"} for i in range(21)]
    assert g.post("/v1.0/$batch", {"requests": many}).status_code == 400
    dup = [{"id": "a", "method": "GET", "url": "/users"}, {"id": "A", "method": "GET", "url": "/groups"}]
    assert g.post("/v1.0/$batch", {"requests": dup}).status_code == 400


def test_a_throttled_batch_item_is_429_with_its_own_retry_after_inside_a_200_batch(g: Graph) -> None:
    g.state.config.set("graph.ru_per_10s", 5)
    r = g.post("/v1.0/$batch", {"requests": [{"id": str(i), "method": "GET", "url": "/users"} for i in range(4)]})
    assert r.status_code == 200
    responses = r.json()["responses"]
    throttled = [x for x in responses if x["status"] == 429]
    assert [x["status"] for x in responses if x["status"] != 429] == [200, 200]
    assert throttled and all(x["headers"]["Retry-After"].isdigit() for x in throttled)
    assert throttled[0]["body"]["error"]["code"] == "TooManyRequests"


def test_writes_are_also_limited_by_the_write_bucket(g: Graph) -> None:
    g.state.config.set("graph.write_per_150s", 1)
    user = next(iter(g.state.directory.users))
    assert g.patch(f"/v1.0/users/{user}", {"jobTitle": "One"}).status_code == 204
    r = g.patch(f"/v1.0/users/{user}", {"jobTitle": "Two"})
    assert r.status_code == 429 and r.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    assert g.get(f"/v1.0/users/{user}").status_code == 200  # reads still pass while writes are throttled


def test_extension_attributes_are_set_on_create_merged_on_patch_and_validated(g: Graph) -> None:
    user = g.new_user("walter.skinner", onPremisesExtensionAttributes={"extensionAttribute15": "a0Y000000000001AAA"})
    g.patch(f"/v1.0/users/{user['id']}", {"onPremisesExtensionAttributes": {"extensionAttribute1": "one"}})
    got = g.get(f"/v1.0/users/{user['id']}?$select=onPremisesExtensionAttributes").json()
    assert got["onPremisesExtensionAttributes"] == {"extensionAttribute15": "a0Y000000000001AAA",
                                                    "extensionAttribute1": "one"}
    bad = g.patch(f"/v1.0/users/{user['id']}", {"onPremisesExtensionAttributes": {"extensionAttribute16": "x"}})
    assert bad.status_code == 400


def test_throttle_paths_aim_the_throttle_fault_at_invitations_only(g: Graph) -> None:
    g.state.faults.patch({"graph": {"throttle_rate": 1.0, "throttle_paths": ["/invitations"]}})
    invite = g.post("/v1.0/invitations", {"invitedUserEmailAddress": "eve@vendor.example.io",
                                          "inviteRedirectUrl": "https://myapps.microsoft.com"})
    assert invite.status_code == 429 and invite.headers["Retry-After"].isdigit()
    assert g.get("/v1.0/users?$top=1").status_code == 200
    g.state.faults.patch({"graph": {"throttle_rate": 0.0}})
    again = g.post("/v1.0/invitations", {"invitedUserEmailAddress": "eve@vendor.example.io",
                                         "inviteRedirectUrl": "https://myapps.microsoft.com"})
    assert again.status_code == 201
