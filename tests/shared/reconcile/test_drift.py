"""Drift rows: who caused a difference. A field changed in Salesforce by someone other than idsync is a direct edit;
on a user matched for the first time, a field Salesforce never had filled is plain drift, not an edit."""

from __future__ import annotations

from shared.engine import Change, ChangeKind, Plan, PlanAction
from shared.reconcile.drift import change_rows

IDSYNC, ADMIN = "005000000000001AAA", "005000000000002AAA"
RECORD = {"Id": "005000000000009AAA", "LastModifiedById": ADMIN, "LastModifiedDate": "2026-11-01T09:00:00.000+0000"}


def _plan(*changes: Change) -> Plan:
    return Plan("e1", "ann@example.com", RECORD["Id"], PlanAction.UPDATE, "drift", changes=changes)


def _field(name: str, before: object, after: object) -> Change:
    return Change(ChangeKind.UPDATE_FIELD, name, before, after, f"attributes.{name}")


def _direct(rows: list[dict[str, object]]) -> dict[str, object]:
    return {str(r["field"]): r["direct_edit"] for r in rows}


def test_a_field_of_a_linked_user_changed_by_someone_else_is_a_direct_edit_even_when_cleared() -> None:
    rows = change_rows(_plan(_field("Title", "Typed In Setup", "Analyst"), _field("MobilePhone", None, "+1 555")),
                       RECORD, frozenset(), IDSYNC, {ADMIN: "admin@example.com"})
    assert _direct(rows) == {"Title": True, "MobilePhone": True}
    assert rows[0]["modified_by_name"] == "admin@example.com"


def test_on_a_first_match_only_values_someone_typed_count_as_edits() -> None:
    link = Change(ChangeKind.LINK, "link", None, "e1", "matching.rules[0]: FederationIdentifier")
    rows = change_rows(_plan(link, _field("Title", "Typed In Setup", "Analyst"), _field("MobilePhone", None, "+1 555"),
                             _field("Entra_Object_Id__c", "", "e1")), RECORD, frozenset(), IDSYNC, {})
    assert _direct(rows) == {"link": False, "Title": True, "MobilePhone": False, "Entra_Object_Id__c": False}


def test_a_record_last_written_by_idsync_has_no_direct_edit() -> None:
    rows = change_rows(_plan(_field("Title", "Old", "New")), {**RECORD, "LastModifiedById": IDSYNC[:15]},
                       frozenset(), IDSYNC, {})
    assert _direct(rows) == {"Title": False}


def test_a_new_user_s_record_names_its_profile_role_and_manager_instead_of_ids() -> None:
    record = {"Username": "ann@example.com", "ProfileId": "00e000000000001AAA", "UserRoleId": "00E000000000002AAA",
              "ManagerId": "005000000000003AAA", "Title": "Analyst"}
    create = Plan("e1", "ann@example.com", None, PlanAction.CREATE, "joiner",
                  changes=(Change(ChangeKind.CREATE_USER, "User", None, record, "scope"),))
    id_names = {"ProfileId": {"00e000000000001AAA": "Sales User"}, "UserRoleId": {"00E000000000002AAA": "CEO"},
                "ManagerId": {"005000000000003AAA": "boss@example.com"}}
    [row] = change_rows(create, None, frozenset(), IDSYNC, {}, id_names)
    assert row["after"] == {"Username": "ann@example.com", "ProfileId": "Sales User", "UserRoleId": "CEO",
                            "ManagerId": "boss@example.com", "Title": "Analyst"}
    assert record["ProfileId"] == "00e000000000001AAA"  # the plan itself (what is written) keeps the ids
