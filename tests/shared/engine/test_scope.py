"""Who is in scope: groups (by name or id, through nested groups), user types, attribute filters; disabled and
deleted users never are."""

from __future__ import annotations

from typing import Any

import pytest

from shared.engine import EntraUser, desired_user
from shared.mapping import Mapping
from tests.shared.engine.builders import GROUP_IDS, demo_mapping, entra_user, sandbox_catalog

CATALOG = sandbox_catalog()


def scoped(scope: dict[str, Any], user: EntraUser) -> tuple[bool, str]:
    mapping = Mapping.model_validate({"scope": scope})
    desired = desired_user(user, mapping, CATALOG)
    return desired.in_scope, desired.reason


def test_a_member_of_a_scope_group_is_in_scope() -> None:
    desired = desired_user(entra_user(["All Employees"]), demo_mapping(), CATALOG)
    assert desired.in_scope
    assert desired.reason.startswith("in scope: member of All Employees")


def test_a_user_outside_the_scope_groups_is_out_and_the_reason_names_the_rule_and_line() -> None:
    desired = desired_user(entra_user(["Engineering"]), demo_mapping(), CATALOG)
    assert not desired.in_scope
    assert desired.reason.startswith("not in scope: not a member of All Employees (mapping.yaml:")


def test_group_references_match_the_object_id_as_well_as_the_display_name() -> None:
    assert scoped({"groups": [GROUP_IDS["Marketing"]]}, entra_user(["Marketing"]))[0]
    assert not scoped({"groups": [GROUP_IDS["Marketing"]]}, entra_user(["Engineering"]))[0]


def test_group_display_names_compare_without_case() -> None:
    assert scoped({"groups": ["all employees"]}, entra_user(["All Employees"]))[0]


def test_membership_through_a_nested_group_counts() -> None:
    # transitiveMemberOf lists "All Employees" for a member of "Sales Team West" nested inside it
    user = EntraUser.from_graph(
        {"id": "u1", "userPrincipalName": "a@b.c", "accountEnabled": True, "userType": "Member"},
        [{"@odata.type": "#microsoft.graph.group", "id": "g-west", "displayName": "Sales Team West"},
         {"@odata.type": "#microsoft.graph.group", "id": "g-all", "displayName": "All Employees"}],
    )
    assert desired_user(user, demo_mapping(), CATALOG).in_scope


def test_directory_roles_in_transitive_membership_are_not_groups() -> None:
    user = EntraUser.from_graph(
        {"id": "u1", "userPrincipalName": "a@b.c", "accountEnabled": True},
        [{"@odata.type": "#microsoft.graph.directoryRole", "id": "r1", "displayName": "All Employees"}],
    )
    assert user.groups == frozenset()


def test_guests_are_out_of_scope_unless_listed_in_user_types() -> None:
    guest = entra_user(["All Employees"], user_type="Guest")
    assert not desired_user(guest, demo_mapping(), CATALOG).in_scope
    assert scoped({"user_types": ["Member", "Guest"]}, guest)[0]


def test_disabled_users_are_never_in_scope() -> None:
    desired = desired_user(entra_user(["All Employees"], enabled=False), demo_mapping(), CATALOG)
    assert (desired.in_scope, desired.reason) == (False, "not in scope: disabled in Entra (accountEnabled false)")


def test_deleted_users_are_never_in_scope() -> None:
    assert not desired_user(entra_user(["All Employees"], deleted="soft"), demo_mapping(), CATALOG).in_scope
    assert not desired_user(EntraUser.gone("u1", "a@b.c"), demo_mapping(), CATALOG).in_scope


def test_filter_equals_compares_without_case() -> None:
    scope = {"filters": [{"attribute": "department", "equals": "sales"}]}
    assert scoped(scope, entra_user(department="Sales"))[0]
    assert not scoped(scope, entra_user(department="Finance"))[0]


def test_filter_in_and_not_in() -> None:
    assert scoped({"filters": [{"attribute": "employeeType", "in": ["Employee"]}]},
                  entra_user(employeeType="Employee"))[0]
    excluded, reason = scoped({"filters": [{"attribute": "employeeType", "not_in": ["Contractor"]}]},
                              entra_user(employeeType="Contractor"))
    assert not excluded and "fails filter employeeType not_in ['Contractor']" in reason
    assert scoped({"filters": [{"attribute": "employeeType", "not_in": ["Contractor"]}]}, entra_user())[0]


def test_filter_exists_on_a_nested_attribute() -> None:
    scope = {"filters": [{"attribute": "employeeOrgData.costCenter", "exists": True}]}
    assert scoped(scope, entra_user())[0]
    assert not scoped(scope, entra_user(employeeOrgData=None))[0]


def test_filter_matches_a_regular_expression() -> None:
    scope = {"filters": [{"attribute": "userPrincipalName", "matches": r"@contoso\.example\.com$"}]}
    assert scoped(scope, entra_user())[0]
    assert not scoped(scope, entra_user(upn="x@fabrikam.example.com"))[0]


def test_from_graph_requires_account_enabled_rather_than_guessing() -> None:
    with pytest.raises(ValueError, match="accountEnabled"):
        EntraUser.from_graph({"id": "u1", "userPrincipalName": "a@b.c"})
