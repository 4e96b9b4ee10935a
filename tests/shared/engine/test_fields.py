"""User fields: what a linked user's plan changes, what an emptied Entra value does, and what Salesforce would
refuse (too long, not in a picklist, required but empty, unknown field) becoming review items."""

from __future__ import annotations

from typing import Any

from shared.engine import ChangeKind, FieldMeta, PlanAction, ReviewCode, SalesforceUserState, plan
from shared.mapping import Mapping
from tests.shared.engine.builders import demo_mapping, entra_user, existing_user, sandbox_catalog

CATALOG = sandbox_catalog()


def linked(**fields: Any) -> SalesforceUserState:
    return SalesforceUserState(user=existing_user(**fields))


def field_changes(p: Any) -> dict[str, tuple[Any, Any]]:
    return {c.target: (c.before, c.after) for c in p.changes if c.kind is ChangeKind.UPDATE_FIELD}


def with_attributes(attributes: dict[str, Any], **extra: Any) -> Mapping:
    return Mapping.model_validate({"scope": {"groups": ["All Employees"]}, "attributes": attributes,
                                   "group_rules": [{"group": "All Employees", "profile": "Standard User"}], **extra})


def test_a_linked_user_in_step_with_entra_gets_a_noop_plan() -> None:
    p = plan(entra_user(), demo_mapping(), linked(), CATALOG)
    assert (p.action, p.changes, p.reviews) == (PlanAction.NOOP, (), ())
    assert p.is_noop


def test_only_fields_whose_value_differs_change_each_with_before_after_and_rule() -> None:
    p = plan(entra_user(jobTitle="Sales Manager", department="Sales"), demo_mapping(), linked(), CATALOG)
    assert p.action is PlanAction.UPDATE
    assert field_changes(p) == {"Title": ("Account Executive", "Sales Manager")}
    (change,) = p.changes
    assert change.rule.startswith("attribute Title <- jobTitle (mapping.yaml:")


def test_an_emptied_entra_value_clears_the_field_by_default() -> None:
    p = plan(entra_user(mobilePhone=None), demo_mapping(), linked(), CATALOG)
    assert field_changes(p) == {"MobilePhone": ("+1 206 555 0100", None)}


def test_on_empty_keep_leaves_the_salesforce_value() -> None:
    mapping = with_attributes({"MobilePhone": {"source": "mobilePhone", "on_empty": "keep"}})
    p = plan(entra_user(mobilePhone=None), mapping, linked(), CATALOG)
    assert "MobilePhone" not in field_changes(p)


def test_email_and_username_compare_without_case_so_they_never_flap() -> None:
    p = plan(entra_user(), demo_mapping(), linked(Email="Jane.Smith@Contoso.Example.com",
                                                 Username="JANE.SMITH@contoso.example.com"), CATALOG)
    assert field_changes(p) == {}


def test_a_renamed_upn_renames_username_and_federation_id() -> None:
    p = plan(entra_user(upn="jane.doe@contoso.example.com", mail="jane.smith@contoso.example.com"), demo_mapping(),
             linked(), CATALOG)
    assert field_changes(p) == {
        "Username": ("jane.smith@contoso.example.com", "jane.doe@contoso.example.com"),
        "FederationIdentifier": ("jane.smith@contoso.example.com", "jane.doe@contoso.example.com"),
    }


def test_a_username_taken_from_the_duplicate_candidates_at_creation_is_kept() -> None:
    p = plan(entra_user(), demo_mapping(), linked(Username="jane.smith.2@contoso.example.com"), CATALOG)
    assert "Username" not in field_changes(p)


def test_a_value_longer_than_the_field_is_truncated_and_the_rule_says_so() -> None:
    long_title = "Senior Principal Strategic Enterprise Account Executive for the Western Region Northwest Team"
    p = plan(entra_user(jobTitle=long_title), demo_mapping(), linked(), CATALOG)
    (change,) = [c for c in p.changes if c.target == "Title"]
    assert change.after == long_title[:80]
    assert change.rule.endswith("truncated to 80")
    assert p.reviews == ()


def test_a_value_too_long_with_truncate_off_is_a_review_item_and_the_field_is_left() -> None:
    mapping = with_attributes({"Title": {"source": "jobTitle", "truncate": False}, "LastName": "surname"})
    p = plan(entra_user(jobTitle="x" * 81), mapping, linked(), CATALOG)
    assert "Title" not in field_changes(p)
    (review,) = p.reviews
    assert review.code is ReviewCode.VALUE_TOO_LONG and review.target == "Title"
    assert review.message.startswith("jane.smith@contoso.example.com: Title value has 81 characters")


def test_a_value_not_in_a_restricted_picklist_is_a_review_item_naming_user_field_and_line() -> None:
    mapping = with_attributes({"LastName": "surname", "TimeZoneSidKey": {"constant": "Mars/Olympus_Mons"}},
                              locale={"apply": "always"})
    p = plan(entra_user(), mapping, linked(), CATALOG)
    (review,) = p.reviews
    assert review.code is ReviewCode.PICKLIST_VALUE
    assert review.target == "TimeZoneSidKey"
    # a mapping built in code has no file, so the line is just "mapping"
    assert review.message == ("jane.smith@contoso.example.com: TimeZoneSidKey value 'Mars/Olympus_Mons' is not in "
                              "the field's restricted picklist (mapping)")
    assert "TimeZoneSidKey" not in field_changes(p)


def test_a_required_field_mapped_to_an_empty_value_is_a_review_item_and_keeps_the_current_value() -> None:
    mapping = with_attributes({"LastName": "surname"})
    p = plan(entra_user(surname=None), mapping, linked(), CATALOG)
    assert field_changes(p) == {}
    (review,) = p.reviews
    assert (review.code, review.target) == (ReviewCode.REQUIRED_FIELD_MISSING, "LastName")
    assert "kept 'Smith'" in review.message


def test_a_required_field_missing_on_create_blocks_the_create_with_a_review_item() -> None:
    mapping = with_attributes({"LastName": "surname", "Email": "mail"})
    p = plan(entra_user(surname=None), mapping, SalesforceUserState(), CATALOG)
    assert p.action is PlanAction.REVIEW and p.changes == ()
    (review,) = p.reviews
    assert (review.code, review.target) == (ReviewCode.REQUIRED_FIELD_MISSING, "LastName")
    assert "required to create the user and it maps to an empty value" in review.message


def test_a_field_the_org_does_not_have_is_a_review_item_and_the_rest_still_applies() -> None:
    mapping = with_attributes({"LastName": "surname", "Title": "jobTitle",
                               "Cost_Center__c": "employeeOrgData.costCenter"})
    p = plan(entra_user(jobTitle="Sales Manager"), mapping, linked(), CATALOG)
    assert field_changes(p) == {"Title": ("Account Executive", "Sales Manager")}
    (review,) = p.reviews
    assert (review.code, review.target) == (ReviewCode.UNKNOWN_FIELD, "Cost_Center__c")


def test_a_read_only_field_is_not_written_on_update() -> None:
    fields = dict(CATALOG.user_fields)
    fields["Title"] = FieldMeta(length=80, updateable=False)
    catalog = sandbox_catalog(user_fields=fields)
    p = plan(entra_user(jobTitle="Sales Manager"), demo_mapping(), linked(), catalog)
    assert "Title" not in field_changes(p)


def test_without_field_metadata_values_are_written_unchecked() -> None:
    catalog = sandbox_catalog(user_fields={})
    p = plan(entra_user(jobTitle="y" * 100), demo_mapping(), linked(), catalog)
    assert field_changes(p) == {"Title": ("Account Executive", "y" * 100)}


def test_the_link_field_receives_the_entra_object_id() -> None:
    p = plan(entra_user(), demo_mapping(), linked(Entra_Object_Id__c=None), CATALOG)
    assert field_changes(p) == {"Entra_Object_Id__c": (None, "7f3c1c9e-0b7d-4c8e-9a55-2d1f0e6b1a01")}


def test_locale_fields_are_set_on_create_only_by_default() -> None:
    p = plan(entra_user(usageLocation="DE"), demo_mapping(), linked(), CATALOG)
    assert field_changes(p) == {}


def test_locale_apply_always_keeps_them_in_step() -> None:
    mapping = with_attributes({"LastName": "surname"}, locale={"apply": "always"})
    p = plan(entra_user(usageLocation="DE"), mapping, linked(), CATALOG)
    assert field_changes(p) == {
        "TimeZoneSidKey": ("America/Los_Angeles", "Europe/Berlin"),
        "LocaleSidKey": ("en_US", "de_DE"),
        "LanguageLocaleKey": ("en_US", "de"),
    }
