"""Profile, role, permission sets, groups, queues and licences: precedence, union, automatic licences, and removal
of only what idsync granted."""

from __future__ import annotations

from typing import Any

from shared.engine import ChangeKind, Plan, PlanAction, ReviewCode, SalesforceUserState, plan
from shared.mapping import Mapping
from tests.shared.engine.builders import (
    PERMISSION_SETS,
    PROFILES,
    PSGS,
    PSL,
    PUBLIC_GROUPS,
    QUEUES,
    ROLES,
    demo_mapping,
    entra_user,
    existing_user,
    sandbox_catalog,
)

CATALOG = sandbox_catalog()
PS = {name: info.id for name, info in PERMISSION_SETS.items()}


def kinds(p: Plan) -> list[tuple[str, str]]:
    return [(c.kind.value, c.target) for c in p.changes]


def state(granted: set[str] | None = None, **held: Any) -> SalesforceUserState:
    user_fields = held.pop("user", {})
    return SalesforceUserState(user=existing_user(**user_fields), granted=frozenset(granted or ()), **held)


def rules_mapping(*rules: dict[str, Any]) -> Mapping:
    return Mapping.model_validate({"attributes": {"LastName": "surname"}, "group_rules": list(rules)})


def test_the_highest_precedence_rule_setting_a_profile_wins() -> None:
    p = plan(entra_user(["All Employees", "Sales Team West"]), demo_mapping(), state(), CATALOG)
    (change,) = [c for c in p.changes if c.kind is ChangeKind.SET_PROFILE]
    assert (change.before, change.after, change.sf_id) == ("Standard User", "Sales User", PROFILES["Sales User"])
    assert change.rule.startswith("group rule 'Sales Team West' (mapping.yaml:") and change.rule.endswith(
        "precedence 20")


def test_precedence_does_not_depend_on_the_order_of_the_rules_in_the_file() -> None:
    mapping = rules_mapping({"group": "Marketing", "precedence": 5, "profile": "Sales User"},
                            {"group": "All Employees", "precedence": 1, "profile": "Standard User"})
    p = plan(entra_user(["All Employees", "Marketing"]), mapping, state(), CATALOG)
    assert [c.after for c in p.changes if c.kind is ChangeKind.SET_PROFILE] == ["Sales User"]


def test_on_equal_precedence_the_earlier_rule_wins() -> None:
    mapping = rules_mapping({"group": "Marketing", "profile": "Sales User"},
                            {"group": "All Employees", "profile": "Standard Platform User"})
    p = plan(entra_user(["All Employees", "Marketing"]), mapping, state(), CATALOG)
    assert [c.after for c in p.changes if c.kind is ChangeKind.SET_PROFILE] == ["Sales User"]


def test_the_highest_precedence_rule_setting_a_role_wins_independently_of_the_profile() -> None:
    mapping = rules_mapping({"group": "Sales Team West", "precedence": 20, "profile": "Sales User",
                             "role": "Account Executive West"},
                            {"group": "Customer Support", "precedence": 30, "role": "Support Agent"})
    p = plan(entra_user(["Sales Team West", "Customer Support"]), mapping, state(), CATALOG)
    assert [(c.kind.value, c.after) for c in p.changes if c.kind in (ChangeKind.SET_PROFILE, ChangeKind.SET_ROLE)] \
        == [("set_profile", "Sales User"), ("set_role", "Support Agent")]


def test_roles_are_found_by_developer_name_too() -> None:
    mapping = rules_mapping({"group": "All Employees", "role": "SupportAgent"})
    p = plan(entra_user(), mapping, state(), CATALOG)
    assert [c.sf_id for c in p.changes if c.kind is ChangeKind.SET_ROLE] == [ROLES["Support Agent"]]


def test_a_role_set_by_idsync_is_cleared_when_no_rule_gives_one_any_more() -> None:
    p = plan(entra_user(["All Employees"]), demo_mapping(),
             state({"role"}, user={"UserRoleId": ROLES["Account Executive West"]}), CATALOG)
    (change,) = [c for c in p.changes if c.kind is ChangeKind.SET_ROLE]
    assert (change.before, change.after, change.sf_id, change.revokes) == (
        "Account Executive West", None, None, ("role",))
    assert "role" not in p.granted_after


def test_a_role_set_by_someone_else_is_left_when_no_rule_gives_one() -> None:
    p = plan(entra_user(["All Employees"]), demo_mapping(), state(user={"UserRoleId": ROLES["CEO"]}), CATALOG)
    assert p.is_noop


def test_a_wanted_role_already_set_by_an_admin_is_not_adopted() -> None:
    p = plan(entra_user(["All Employees", "Customer Support"]), demo_mapping(),
             state(user={"UserRoleId": ROLES["Support Agent"]}, permission_sets={PS["Service_Cloud_User"]: "0Pa1"},
                   groups={PUBLIC_GROUPS["Support_Team"]: "011a", QUEUES["Support_Queue"]: "011b"}), CATALOG)
    assert p.is_noop
    assert "role" not in p.granted_after
    assert p.unmanaged == ("group:Support_Team", "ps:Service_Cloud_User", "queue:Support_Queue")


def test_an_unknown_role_never_clears_the_current_role() -> None:
    mapping = rules_mapping({"group": "All Employees", "role": "Chief Vibes Officer"})
    p = plan(entra_user(), mapping, state({"role"}, user={"UserRoleId": ROLES["CEO"]}), CATALOG)
    assert [c for c in p.changes if c.kind is ChangeKind.SET_ROLE] == []
    (review,) = p.reviews
    assert (review.code, review.target) == (ReviewCode.UNKNOWN_ROLE, "role")


def test_entitlements_are_the_union_over_every_matching_rule() -> None:
    p = plan(entra_user(["All Employees", "Sales Team West", "Account Executives", "Marketing"]), demo_mapping(),
             state(), CATALOG)
    assert kinds(p)[2:] == [
        ("add_licence", "SalesCloudUserPsl"),
        ("add_permission_set", "Sales_Cloud_User"),
        ("add_permission_set", "Marketing_User"),
        ("add_permission_set_group", "Sales_Bundle"),
        ("add_group", "All_Sales"),
    ]


def test_a_permission_set_needing_a_licence_brings_the_licence_first() -> None:
    p = plan(entra_user(["All Employees", "Sales Team East"]), demo_mapping(), state(), CATALOG)
    adds = [c for c in p.changes if c.kind in (ChangeKind.ADD_LICENCE, ChangeKind.ADD_PERMISSION_SET)]
    assert [(c.kind, c.sf_id) for c in adds] == [(ChangeKind.ADD_LICENCE, PSL["SalesCloudUserPsl"]),
                                                  (ChangeKind.ADD_PERMISSION_SET, PS["Sales_Cloud_User"])]
    assert adds[0].rule.startswith("needed by permission set Sales_Cloud_User (group rule 'Sales Team East'")
    assert adds[0].grants == ("psl:SalesCloudUserPsl",)


def test_a_licence_the_user_already_holds_is_not_added_again() -> None:
    p = plan(entra_user(["All Employees", "Sales Team East"]), demo_mapping(),
             state(licences={PSL["SalesCloudUserPsl"]: "2LA1"}), CATALOG)
    assert ("add_licence", "SalesCloudUserPsl") not in kinds(p)


def test_a_mover_loses_what_idsync_granted_and_keeps_what_an_admin_assigned() -> None:
    west = state(
        {"role", "ps:Sales_Cloud_User", "psl:SalesCloudUserPsl", "group:All_Sales"},
        user={"ProfileId": PROFILES["Sales User"], "UserRoleId": ROLES["Account Executive West"]},
        permission_sets={PS["Sales_Cloud_User"]: "0PaSCU", PS["API_Only"]: "0PaAPI"},
        licences={PSL["SalesCloudUserPsl"]: "2LAPSL"},
        groups={PUBLIC_GROUPS["All_Sales"]: "011SALES"},
    )
    p = plan(entra_user(["All Employees", "Customer Support"]), demo_mapping(), west, CATALOG)
    assert kinds(p) == [
        ("set_profile", "ProfileId"),
        ("set_role", "UserRoleId"),
        ("add_permission_set", "Service_Cloud_User"),
        ("add_group", "Support_Team"),
        ("add_queue", "Support_Queue"),
        ("remove_group", "All_Sales"),
        ("remove_permission_set", "Sales_Cloud_User"),
        ("remove_licence", "SalesCloudUserPsl"),
    ]
    removals = {c.target: c.record_id for c in p.changes if c.kind.value.startswith("remove_")}
    assert removals == {"All_Sales": "011SALES", "Sales_Cloud_User": "0PaSCU", "SalesCloudUserPsl": "2LAPSL"}
    assert p.unmanaged == ("ps:API_Only",)
    assert p.granted_after == {"role", "ps:Service_Cloud_User", "group:Support_Team", "queue:Support_Queue"}


def test_an_entitlement_nobody_wants_but_idsync_did_not_grant_is_never_removed() -> None:
    held = state(permission_sets={PS["Marketing_User"]: "0PaMKT"}, permission_set_groups={PSGS["Sales_Bundle"]: "0Pa"})
    p = plan(entra_user(["All Employees"]), demo_mapping(), held, CATALOG)
    assert p.is_noop
    assert p.unmanaged == ("ps:Marketing_User", "psg:Sales_Bundle")


def test_a_licence_idsync_granted_stays_while_an_admins_permission_set_still_needs_it() -> None:
    mapping = rules_mapping({"group": "All Employees", "profile": "Standard User"})
    # both granted by idsync and no longer wanted: the set goes, and with it the licence
    both_idsyncs = state({"ps:Sales_Cloud_User", "psl:SalesCloudUserPsl"},
                         permission_sets={PS["Sales_Cloud_User"]: "0PaSCU"}, licences={PSL["SalesCloudUserPsl"]: "2LA"})
    assert kinds(plan(entra_user(), mapping, both_idsyncs, CATALOG))[-2:] == [
        ("remove_permission_set", "Sales_Cloud_User"), ("remove_licence", "SalesCloudUserPsl")]

    # the set was an admin's: it stays, so the licence it needs stays too
    admin_kept = state({"psl:SalesCloudUserPsl"}, permission_sets={PS["Sales_Cloud_User"]: "0PaSCU"},
                       licences={PSL["SalesCloudUserPsl"]: "2LA"})
    p = plan(entra_user(), mapping, admin_kept, CATALOG)
    assert ("remove_licence", "SalesCloudUserPsl") not in kinds(p)
    assert p.unmanaged == ("ps:Sales_Cloud_User",)


def test_an_unknown_permission_set_is_a_review_item_and_the_rest_of_the_plan_applies() -> None:
    mapping = rules_mapping({"group": "All Employees", "profile": "Sales User",
                             "permission_sets": ["Sales_Cloud_Usr", "Marketing_User"]})
    p = plan(entra_user(jobTitle="Sales Manager"), Mapping.model_validate(
        {**mapping.model_dump(), "attributes": {"LastName": "surname", "Title": "jobTitle"}}), state(), CATALOG)
    assert kinds(p) == [("update_field", "Title"), ("set_profile", "ProfileId"),
                        ("add_permission_set", "Marketing_User")]
    (review,) = p.reviews
    assert (review.code, review.target) == (ReviewCode.UNKNOWN_PERMISSION_SET, "ps:Sales_Cloud_Usr")
    assert review.message == "jane.smith@contoso.example.com: permission set 'Sales_Cloud_Usr' does not exist in " \
                             "the org (mapping)"


def test_unknown_public_group_queue_and_permission_set_group_are_review_items() -> None:
    mapping = rules_mapping({"group": "All Employees", "public_groups": ["Nope_Group"], "queues": ["Nope_Queue"],
                             "permission_set_groups": ["Nope_Bundle"]})
    p = plan(entra_user(), mapping, state(), CATALOG)
    assert {r.code for r in p.reviews} == {ReviewCode.UNKNOWN_PUBLIC_GROUP, ReviewCode.UNKNOWN_QUEUE,
                                           ReviewCode.UNKNOWN_PERMISSION_SET_GROUP}
    assert p.is_noop


def test_an_unknown_profile_on_update_is_a_review_item_and_fields_still_change() -> None:
    mapping = Mapping.model_validate({"attributes": {"LastName": "surname", "Title": "jobTitle"},
                                      "group_rules": [{"group": "All Employees", "profile": "Sales Usr"}]})
    p = plan(entra_user(jobTitle="Sales Manager"), mapping, state(), CATALOG)
    assert p.action is PlanAction.UPDATE
    assert kinds(p) == [("update_field", "Title")]
    assert [r.code for r in p.reviews] == [ReviewCode.UNKNOWN_PROFILE]


def test_an_explicit_permission_set_licence_is_assigned() -> None:
    mapping = rules_mapping({"group": "All Employees", "permission_set_licenses": ["SalesCloudUserPsl"]})
    p = plan(entra_user(), mapping, state(), CATALOG)
    assert kinds(p) == [("add_licence", "SalesCloudUserPsl")]


def test_a_granted_key_for_something_no_longer_held_nor_wanted_is_forgotten() -> None:
    p = plan(entra_user(), demo_mapping(), state({"ps:Marketing_User"}), CATALOG)
    assert p.is_noop and p.granted_after == frozenset()


def test_something_idsync_granted_and_an_admin_removed_is_given_back_while_still_wanted() -> None:
    p = plan(entra_user(["All Employees", "Marketing"]), demo_mapping(), state({"ps:Marketing_User"}), CATALOG)
    assert kinds(p) == [("add_permission_set", "Marketing_User")]
