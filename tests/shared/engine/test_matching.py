"""Matching an Entra user to an existing Salesforce user: one outcome per situation, never a guess."""

from __future__ import annotations

from typing import Any

from shared.engine import CandidateIndex, ReviewCode, match_user, matching_query_terms
from shared.mapping import Mapping
from tests.shared.engine.builders import demo_mapping, entra_user, sf_id

UPN = "jane.smith@contoso.example.com"
ENTRA_ID = "7f3c1c9e-0b7d-4c8e-9a55-2d1f0e6b1a01"


def record(n: int, **fields: Any) -> dict[str, Any]:
    return {"Id": sf_id("005", n), **fields}


def test_the_stored_link_decides_while_its_record_exists() -> None:
    linked = record(1, Username="someone.else@contoso.example.com")
    other = record(2, FederationIdentifier=UPN)
    outcome = match_user(entra_user(), demo_mapping(), linked["Id"], [linked, other])
    assert (outcome.kind, outcome.sf_user_id, outcome.rule) == ("link", linked["Id"], "link")
    assert outcome.by_stored_link


def test_a_stored_link_whose_record_is_gone_falls_through_to_the_rules() -> None:
    other = record(2, FederationIdentifier=UPN)
    outcome = match_user(entra_user(), demo_mapping(), sf_id("005", 99), [other])
    assert (outcome.kind, outcome.sf_user_id, outcome.rule) == ("link", other["Id"], "FederationIdentifier")


def test_match_by_federation_identifier() -> None:
    found = record(3, FederationIdentifier=UPN)
    assert match_user(entra_user(), demo_mapping(), None, [found]).sf_user_id == found["Id"]


def test_federation_identifier_compares_case_sensitively_like_salesforce() -> None:
    found = record(3, FederationIdentifier=UPN.upper())
    assert match_user(entra_user(), demo_mapping(), None, [found]).kind == "create"


def test_match_by_username_ignores_case() -> None:
    found = record(4, Username="Jane.Smith@Contoso.Example.com")
    outcome = match_user(entra_user(), demo_mapping(), None, [found])
    assert (outcome.kind, outcome.sf_user_id, outcome.rule) == ("link", found["Id"], "Username")


def test_match_by_email_and_employee_number_needs_both() -> None:
    both = record(5, Email="JANE.SMITH@contoso.example.com", EmployeeNumber="E100042")
    outcome = match_user(entra_user(), demo_mapping(), None, [both])
    assert (outcome.kind, outcome.rule) == ("link", "Email AND EmployeeNumber")
    only_email = record(6, Email=UPN, EmployeeNumber="E999999")
    assert match_user(entra_user(), demo_mapping(), None, [only_email]).kind == "create"


def test_no_match_means_create() -> None:
    assert match_user(entra_user(), demo_mapping(), None, [record(7, Username="x@y.z")]).kind == "create"


def test_two_records_for_one_rule_are_a_review_item_listing_both() -> None:
    a, b = record(8, Email=UPN, EmployeeNumber="E100042"), record(9, Email=UPN, EmployeeNumber="E100042")
    outcome = match_user(entra_user(), demo_mapping(), None, [a, b])
    assert outcome.kind == "review" and outcome.review is not None
    assert outcome.review.code is ReviewCode.MATCH_SEVERAL
    assert outcome.review.candidates == (a["Id"], b["Id"])
    assert "matching rule 'Email AND EmployeeNumber' finds 2 Salesforce users" in outcome.review.message


def test_different_records_by_different_rules_are_a_conflict_for_review() -> None:
    by_federation = record(10, FederationIdentifier=UPN)
    by_username = record(11, Username=UPN)
    outcome = match_user(entra_user(), demo_mapping(), None, [by_federation, by_username])
    assert outcome.review is not None and outcome.review.code is ReviewCode.MATCH_CONFLICT
    assert outcome.review.candidates == (by_federation["Id"], by_username["Id"])


def test_several_rules_finding_the_same_record_agree() -> None:
    same = record(12, FederationIdentifier=UPN, Username=UPN, Email=UPN, EmployeeNumber="E100042")
    outcome = match_user(entra_user(), demo_mapping(), None, [same])
    assert (outcome.kind, outcome.rule) == ("link", "FederationIdentifier")


def test_a_record_already_linked_to_another_entra_user_is_never_taken_over() -> None:
    found = record(13, FederationIdentifier=UPN)
    outcome = match_user(entra_user(), demo_mapping(), None, [found], linked_elsewhere={found["Id"]})
    assert outcome.review is not None and outcome.review.code is ReviewCode.LINKED_ELSEWHERE


def test_a_record_whose_link_field_holds_another_entra_id_is_linked_elsewhere() -> None:
    found = record(14, FederationIdentifier=UPN, Entra_Object_Id__c="0ther-entra-id")
    outcome = match_user(entra_user(), demo_mapping(), None, [found])
    assert outcome.review is not None and outcome.review.code is ReviewCode.LINKED_ELSEWHERE


def test_linked_elsewhere_as_a_mapping_ignores_this_users_own_entry() -> None:
    found = record(15, FederationIdentifier=UPN)
    outcome = match_user(entra_user(), demo_mapping(), None, [found], linked_elsewhere={found["Id"]: ENTRA_ID})
    assert outcome.kind == "link"


def test_rules_compare_the_value_the_mapping_gives_so_a_sandbox_suffix_counts() -> None:
    mapping = Mapping.model_validate({"username": {"suffix": ".uat"}, "matching": {"rules": ["link", "Username"]}})
    found = record(16, Username=f"{UPN}.uat")
    assert match_user(entra_user(), mapping, None, [found]).sf_user_id == found["Id"]


def test_query_terms_collect_each_fields_values_across_a_batch() -> None:
    users = [entra_user(), entra_user(entra_id="e2", upn="ann.lee@contoso.example.com", employeeId="E2",
                                      mail="ann.lee@contoso.example.com")]
    terms = matching_query_terms(users, demo_mapping(), stored_links=[sf_id("005", 1), None])
    assert terms == {
        "FederationIdentifier": {UPN, "ann.lee@contoso.example.com"},
        "Username": {UPN, "ann.lee@contoso.example.com"},
        "Email": {UPN, "ann.lee@contoso.example.com"},
        "EmployeeNumber": {"E100042", "E2"},
        "Id": {sf_id("005", 1)},
    }


def test_a_prebuilt_index_gives_the_same_outcome_as_a_list() -> None:
    records = [record(17, Username=UPN), record(18, Username="other@contoso.example.com")]
    index = CandidateIndex.for_mapping(records, demo_mapping())
    assert match_user(entra_user(), demo_mapping(), None, index) == match_user(entra_user(), demo_mapping(), None,
                                                                                records)
