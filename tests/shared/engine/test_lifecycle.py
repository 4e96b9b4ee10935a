"""The plan's action for each situation (create, update, deprovision, ignore, review), the late-bound manager,
and the plan's outputs (JSON, the rich table, the User record for the executor)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from shared.engine import (
    REQUIRED_ON_CREATE,
    ChangeKind,
    MatchOutcome,
    PlanAction,
    ReviewCode,
    SalesforceUserState,
    plan,
)
from shared.mapping import Mapping
from tests.shared.engine.builders import (
    PROFILES,
    ROLES,
    apply_to_state,
    demo_mapping,
    entra_user,
    existing_user,
    sandbox_catalog,
    sf_id,
)

CATALOG = sandbox_catalog()
MANAGER = "3b1d3f0c-5a7e-4a59-9d3e-1f7e6c2b9a10"
LINKED = SalesforceUserState(user=existing_user())


def test_a_new_in_scope_user_is_created_with_every_required_field_then_given_entitlements() -> None:
    p = plan(entra_user(["All Employees", "Sales Team West"]), demo_mapping(), SalesforceUserState(), CATALOG)
    assert p.action is PlanAction.CREATE and p.sf_user_id is None
    create = p.changes[0]
    assert create.kind is ChangeKind.CREATE_USER
    record = create.after
    assert all(record.get(f) for f in REQUIRED_ON_CREATE)
    assert record["ProfileId"] == PROFILES["Sales User"]
    assert record["UserRoleId"] == ROLES["Account Executive West"]
    assert (record["Username"], record["FederationIdentifier"]) == ("jane.smith@contoso.example.com",) * 2
    assert (record["TimeZoneSidKey"], record["LocaleSidKey"], record["LanguageLocaleKey"]) == (
        "America/Los_Angeles", "en_US", "en_US")
    assert len(record["Alias"]) == 8 and len(record["CommunityNickname"]) <= 40
    assert create.grants == ("role",)
    assert create.field_rules is not None and create.field_rules["Title"].startswith("attribute Title <- jobTitle")
    assert [c.kind for c in p.changes[1:]] == [ChangeKind.ADD_LICENCE, ChangeKind.ADD_PERMISSION_SET,
                                                ChangeKind.ADD_GROUP]


def test_a_create_without_any_profile_is_not_attempted() -> None:
    mapping = Mapping.model_validate({"attributes": {"LastName": "surname", "Email": "mail"}})
    p = plan(entra_user(), mapping, SalesforceUserState(), CATALOG)
    assert (p.action, p.changes) == (PlanAction.REVIEW, ())
    assert [r.code for r in p.reviews] == [ReviewCode.NO_PROFILE]


def test_a_create_with_an_unknown_profile_is_not_attempted_and_says_which_name() -> None:
    mapping = Mapping.model_validate({"attributes": {"LastName": "surname", "Email": "mail"},
                                      "group_rules": [{"group": "All Employees", "profile": "Standard Usr"}]})
    p = plan(entra_user(), mapping, SalesforceUserState(), CATALOG)
    assert (p.action, p.changes) == (PlanAction.REVIEW, ())
    (review,) = p.reviews
    assert review.code is ReviewCode.UNKNOWN_PROFILE
    assert "profile 'Standard Usr' does not exist in the org" in review.message


def test_the_executor_gets_one_user_record_per_plan() -> None:
    p = plan(entra_user(["All Employees", "Customer Support"], jobTitle="Support Engineer"), demo_mapping(), LINKED,
             CATALOG)
    assert p.user_record() == {"Title": "Support Engineer", "UserRoleId": ROLES["Support Agent"]}
    assert plan(entra_user(), demo_mapping(), LINKED, CATALOG).user_record() is None


def test_a_linked_user_leaving_scope_is_deprovisioned_with_the_reason() -> None:
    p = plan(entra_user(["Engineering"]), demo_mapping(), LINKED, CATALOG)
    assert p.action is PlanAction.DEPROVISION
    (change,) = p.changes
    assert change.kind is ChangeKind.DEPROVISION and change.sf_id == existing_user()["Id"]
    assert change.rule.startswith("not in scope: not a member of All Employees (mapping.yaml:")


def test_a_linked_user_disabled_in_entra_is_deprovisioned() -> None:
    p = plan(entra_user(enabled=False), demo_mapping(), LINKED, CATALOG)
    assert p.action is PlanAction.DEPROVISION


def test_a_deprovisioned_user_already_inactive_needs_nothing_more() -> None:
    p = plan(entra_user(["Engineering"]), demo_mapping(), SalesforceUserState(user=existing_user(IsActive=False)),
             CATALOG)
    assert p.action is PlanAction.NOOP and p.is_noop


def test_an_unlinked_user_out_of_scope_is_ignored() -> None:
    p = plan(entra_user(["Engineering"]), demo_mapping(), SalesforceUserState(), CATALOG)
    assert (p.action, p.changes) == (PlanAction.IGNORE, ())


def test_an_enabled_user_out_of_scope_found_by_a_matching_rule_is_left_alone() -> None:
    record = existing_user(Entra_Object_Id__c=None)
    p = plan(entra_user(["Engineering"]), demo_mapping(), SalesforceUserState(user=record), CATALOG,
             MatchOutcome.link(record["Id"], "FederationIdentifier"))
    assert p.action is PlanAction.IGNORE
    assert "was never linked by idsync: left alone" in p.reason


def test_a_disabled_user_found_by_a_matching_rule_is_a_leaver() -> None:
    record = existing_user(Entra_Object_Id__c=None)
    p = plan(entra_user(enabled=False), demo_mapping(), SalesforceUserState(user=record), CATALOG,
             MatchOutcome.link(record["Id"], "FederationIdentifier"))
    assert p.action is PlanAction.DEPROVISION
    assert [c.kind for c in p.changes] == [ChangeKind.LINK, ChangeKind.DEPROVISION]


def test_a_user_found_by_a_matching_rule_is_linked_first_then_updated() -> None:
    record = existing_user(Entra_Object_Id__c=None, Title="Sales Rep")
    p = plan(entra_user(), demo_mapping(), SalesforceUserState(user=record), CATALOG,
             MatchOutcome.link(record["Id"], "Email AND EmployeeNumber"))
    assert [(c.kind, c.target) for c in p.changes] == [
        (ChangeKind.LINK, "jane.smith@contoso.example.com"),
        (ChangeKind.UPDATE_FIELD, "Title"),
        (ChangeKind.UPDATE_FIELD, "Entra_Object_Id__c"),
    ]
    assert p.changes[0].sf_id == record["Id"] and p.changes[0].rule == "matching rule 'Email AND EmployeeNumber'"

    from_matcher = MatchOutcome.link(record["Id"], "Email AND EmployeeNumber", "mapping.yaml:99")
    p = plan(entra_user(), demo_mapping(), SalesforceUserState(user=record), CATALOG, from_matcher)
    assert p.changes[0].rule == "matching rule 'Email AND EmployeeNumber' (mapping.yaml:99)"


def test_a_matching_review_is_the_whole_plan() -> None:
    review = MatchOutcome("review")
    p = plan(entra_user(), demo_mapping(), SalesforceUserState(), CATALOG, review)
    assert (p.action, p.changes) == (PlanAction.REVIEW, ())


def test_a_match_that_contradicts_the_state_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="match says create"):
        plan(entra_user(), demo_mapping(), LINKED, CATALOG, MatchOutcome.create())


def test_a_manager_not_provisioned_yet_leaves_manager_id_and_asks_to_be_replanned() -> None:
    user = entra_user(manager_id=MANAGER)
    p = plan(user, demo_mapping(), LINKED, CATALOG)
    assert p.is_noop and p.waiting_for_manager == MANAGER


def test_once_the_manager_is_linked_the_report_gets_manager_id() -> None:
    manager_sf = sf_id("005", 7)
    p = plan(entra_user(manager_id=MANAGER), demo_mapping(), SalesforceUserState(user=existing_user(),
                                                                                   manager_sf_id=manager_sf), CATALOG)
    assert [(c.target, c.before, c.after) for c in p.changes] == [("ManagerId", None, manager_sf)]
    assert p.waiting_for_manager is None


def test_a_user_whose_entra_manager_was_removed_loses_manager_id() -> None:
    p = plan(entra_user(), demo_mapping(), SalesforceUserState(user=existing_user(ManagerId=sf_id("005", 7))),
             CATALOG)
    assert [(c.target, c.after) for c in p.changes] == [("ManagerId", None)]


def test_a_joiner_whose_manager_is_not_provisioned_is_created_without_manager_id() -> None:
    p = plan(entra_user(manager_id=MANAGER), demo_mapping(), SalesforceUserState(), CATALOG)
    assert p.action is PlanAction.CREATE and "ManagerId" not in p.changes[0].after
    assert p.waiting_for_manager == MANAGER


def test_planning_the_applied_plan_again_changes_nothing() -> None:
    user = entra_user(["All Employees", "Sales Team West", "Account Executives"])
    first = plan(user, demo_mapping(), SalesforceUserState(), CATALOG)
    after = apply_to_state(first, SalesforceUserState())
    assert plan(user, demo_mapping(), after, CATALOG).is_noop


def test_to_json_is_stable_and_json_safe() -> None:
    user = entra_user(["All Employees", "Sales Team West"])
    one = plan(user, demo_mapping(), SalesforceUserState(), CATALOG).to_json()
    two = plan(user, demo_mapping(), SalesforceUserState(), CATALOG).to_json()
    assert one == two
    data = json.loads(one)
    assert data["action"] == "create" and data["changes"][0]["kind"] == "create_user"
    assert data["granted_after"] == sorted(data["granted_after"])


def test_render_shows_each_change_before_after_and_why() -> None:
    state = SalesforceUserState(user=existing_user(), permission_sets={"0PS000000000004AAA": "0Pa"})
    p = plan(entra_user(["All Employees", "Marketing"], jobTitle="Sales Manager"), demo_mapping(), state, CATALOG)
    console = Console(record=True, width=200)
    p.render(console)
    text = console.export_text()
    assert "jane.smith@contoso.example.com  update" in text
    assert "update_field" in text and "Account Executive → Sales Manager" in text
    assert "add_permission_set" in text and "group rule 'Marketing' (mapping.yaml:" in text
    assert "not managed by idsync (left alone): ps:API_Only" in text
