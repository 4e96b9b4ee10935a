"""The shipped examples/mapping.yaml on a catalogue like the seeded sandbox's gives the demo contract of issue 7."""

from __future__ import annotations

from dataclasses import replace

from shared.engine import ChangeKind, Plan, PlanAction, SalesforceUserState, plan
from tests.shared.engine.builders import (
    PERMISSION_SETS,
    PROFILES,
    PSGS,
    PSL,
    PUBLIC_GROUPS,
    QUEUES,
    ROLES,
    apply_to_state,
    demo_mapping,
    entra_user,
    sandbox_catalog,
    sf_id,
)

CATALOG = sandbox_catalog()
MANAGER = "3b1d3f0c-5a7e-4a59-9d3e-1f7e6c2b9a10"
MANAGER_SF = sf_id("005", 77)
PS = {name: info.id for name, info in PERMISSION_SETS.items()}


def joiner(*groups: str) -> tuple[Plan, SalesforceUserState]:
    user = entra_user(groups, manager_id=MANAGER)
    p = plan(user, demo_mapping(), SalesforceUserState(manager_sf_id=MANAGER_SF), CATALOG)
    return p, apply_to_state(p, SalesforceUserState(manager_sf_id=MANAGER_SF))


def assert_all_employees_fields(state: SalesforceUserState) -> None:
    user = state.user
    assert user is not None
    assert {f: user[f] for f in ("Title", "Department", "MobilePhone", "EmployeeNumber", "FederationIdentifier",
                                 "Username", "ManagerId", "FirstName", "LastName", "Email", "Entra_Object_Id__c")} == {
        "Title": "Account Executive",
        "Department": "Sales",
        "MobilePhone": "+1 206 555 0100",
        "EmployeeNumber": "E100042",
        "FederationIdentifier": "jane.smith@contoso.example.com",
        "Username": "jane.smith@contoso.example.com",
        "ManagerId": MANAGER_SF,
        "FirstName": "Jane",
        "LastName": "Smith",
        "Email": "jane.smith@contoso.example.com",
        "Entra_Object_Id__c": "7f3c1c9e-0b7d-4c8e-9a55-2d1f0e6b1a01",
    }


def test_all_employees_gives_standard_user_and_the_mapped_fields() -> None:
    p, state = joiner("All Employees")
    assert p.action is PlanAction.CREATE and p.reviews == ()
    assert state.user is not None and state.user["ProfileId"] == PROFILES["Standard User"]
    assert state.user.get("UserRoleId") is None
    assert_all_employees_fields(state)
    assert (dict(state.permission_sets), dict(state.groups)) == ({}, {})


def test_sales_team_west_gives_sales_user_its_role_permission_set_licence_and_public_group() -> None:
    p, state = joiner("All Employees", "Sales Team West")
    assert p.reviews == ()
    assert state.user is not None
    assert (state.user["ProfileId"], state.user["UserRoleId"]) == (PROFILES["Sales User"],
                                                                   ROLES["Account Executive West"])
    assert_all_employees_fields(state)
    assert set(state.permission_sets) == {PS["Sales_Cloud_User"]}
    assert set(state.licences) == {PSL["SalesCloudUserPsl"]}
    assert set(state.groups) == {PUBLIC_GROUPS["All_Sales"]}


def test_sales_team_east_gives_the_east_role() -> None:
    _p, state = joiner("All Employees", "Sales Team East")
    assert state.user is not None and state.user["UserRoleId"] == ROLES["Account Executive East"]
    assert set(state.permission_sets) == {PS["Sales_Cloud_User"]}


def test_account_executives_adds_the_sales_bundle_permission_set_group() -> None:
    _p, state = joiner("All Employees", "Sales Team West", "Account Executives")
    assert set(state.permission_set_groups) == {PSGS["Sales_Bundle"]}


def test_customer_support_gives_support_agent_service_cloud_support_team_and_the_queue() -> None:
    p, state = joiner("All Employees", "Customer Support")
    assert p.reviews == ()
    assert state.user is not None
    assert (state.user["ProfileId"], state.user["UserRoleId"]) == (PROFILES["Standard User"], ROLES["Support Agent"])
    assert set(state.permission_sets) == {PS["Service_Cloud_User"]}
    assert set(state.groups) == {PUBLIC_GROUPS["Support_Team"], QUEUES["Support_Queue"]}
    assert state.licences == {}


def test_marketing_adds_marketing_user() -> None:
    _p, state = joiner("All Employees", "Marketing")
    assert set(state.permission_sets) == {PS["Marketing_User"]}


def test_moving_from_sales_team_west_to_customer_support_swaps_everything_but_keeps_api_only() -> None:
    _p, west = joiner("All Employees", "Sales Team West")
    with_admin_ps = replace(west, permission_sets={**west.permission_sets, PS["API_Only"]: "0PaADMIN"})
    mover = entra_user(["All Employees", "Customer Support"], manager_id=MANAGER)
    p = plan(mover, demo_mapping(), with_admin_ps, CATALOG)
    assert p.action is PlanAction.UPDATE
    after = apply_to_state(p, with_admin_ps)
    assert after.user is not None
    assert (after.user["ProfileId"], after.user["UserRoleId"]) == (PROFILES["Standard User"], ROLES["Support Agent"])
    assert set(after.permission_sets) == {PS["Service_Cloud_User"], PS["API_Only"]}
    assert set(after.groups) == {PUBLIC_GROUPS["Support_Team"], QUEUES["Support_Queue"]}
    assert after.licences == {}
    assert p.unmanaged == ("ps:API_Only",)
    assert plan(mover, demo_mapping(), after, CATALOG).is_noop


def test_leaving_all_employees_is_a_leaver() -> None:
    _p, state = joiner("All Employees", "Sales Team West")
    p = plan(entra_user(["Sales Team West"]), demo_mapping(), state, CATALOG)
    assert p.action is PlanAction.DEPROVISION
    assert [c.kind for c in p.changes] == [ChangeKind.DEPROVISION]
