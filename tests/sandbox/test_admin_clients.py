"""The admin clients put ids and UPNs into Graph paths percent-encoded, as Graph requires, so a guest's `#EXT#` UPN
(what `sandbox.tenant list` prints) works wherever a member's does; the sandbox decodes each path once, like Graph."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from sandbox.admin_clients import GraphAdmin, segment
from sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def graph(sandbox: SandboxServer) -> GraphAdmin:
    return GraphAdmin(sandbox.env())


@pytest.fixture
def guest(sandbox: SandboxServer) -> dict[str, str]:
    with sandbox.state.lock:
        return dict(next(u for u in sandbox.state.directory.users.values() if u["userType"] == "Guest"))


def test_a_path_segment_keeps_the_at_sign_and_encodes_what_would_end_or_split_the_path():
    assert segment("ana.lima_partner.example.org#EXT#@contoso1.onmicrosoft.com") == (
        "ana.lima_partner.example.org%23EXT%23@contoso1.onmicrosoft.com")
    assert segment("o'brien@x.example.com") == "o%27brien@x.example.com"
    assert segment("a/b?c%d e") == "a%2Fb%3Fc%25d%20e"


def test_a_guest_is_read_updated_disabled_and_enabled_by_its_ext_upn(graph: GraphAdmin, guest: dict[str, str]):
    upn = guest["userPrincipalName"]
    assert "#EXT#@" in upn
    assert graph.user(upn)["id"] == guest["id"]
    graph.update(upn, jobTitle="Distribution Lead")
    assert graph.http.get(f"/users/{guest['id']}", params={"$select": "jobTitle"}).json()["jobTitle"] == (
        "Distribution Lead")
    graph.disable(upn)
    assert graph.user(upn)["accountEnabled"] is False
    graph.enable(upn)
    assert graph.user(upn)["accountEnabled"] is True


def test_a_guest_joins_and_leaves_a_group_by_its_ext_upn(graph: GraphAdmin, guest: dict[str, str]):
    upn = guest["userPrincipalName"]
    name = graph.http.get("/groups", params={"$top": 1}).json()["value"][0]["displayName"]  # any group will do
    graph.add_to_group(upn, name)
    assert name in graph.groups_of(upn)
    graph.remove_from_group(upn, name)
    assert name not in graph.groups_of(upn)


def test_a_guest_s_manager_is_set_by_ext_upns_on_both_sides(graph: GraphAdmin, sandbox: SandboxServer,
                                                             guest: dict[str, str]):
    with sandbox.state.lock:
        other = next(u for u in sandbox.state.directory.users.values()
                     if u["userType"] == "Guest" and u["id"] != guest["id"])
    graph.set_manager(guest["userPrincipalName"], other["userPrincipalName"])
    manager = graph.http.get(f"/users/{guest['id']}/manager").raise_for_status().json()
    assert manager["id"] == other["id"]


def test_the_sandbox_decodes_a_path_once_so_an_encoded_percent_sign_stays_a_percent_sign(
    graph: GraphAdmin, guest: dict[str, str]
):
    once = quote(guest["userPrincipalName"], safe="@")
    assert graph.http.get(f"/users/{once}").status_code == 200
    twice = graph.http.get(f"/users/{quote(once, safe='@')}")  # `%2523`: a literal `%23`, as Graph reads it
    assert twice.status_code == 404 and twice.json()["error"]["code"] == "Request_ResourceNotFound"
