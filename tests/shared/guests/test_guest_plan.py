"""Pure planning of guests and enrichment: which Account, which Contact, which fields (the demo mapping)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.salesforce.schema import default_schema
from shared.guests.fields import metas_from_describe
from shared.guests.plan import (
    ContactMatch,
    decide_account,
    match_contact,
    new_account_values,
    pick_account,
    plan_account,
    plan_contact,
    plan_removed,
    website_host,
)
from shared.guests.subject import build_subject, guest_address
from shared.mapping import load_mapping, parse_mapping_text

ROOT = Path(__file__).resolve().parents[3]
DEMO = load_mapping(ROOT / "examples" / "mapping.yaml")
SCHEMA = default_schema()
CONTACT = metas_from_describe(SCHEMA["Contact"].describe("/services/data/v62.0"))
ACCOUNT = metas_from_describe(SCHEMA["Account"].describe("/services/data/v62.0"))
GUEST_ID = "9b000000-0000-4000-8000-000000000001"
TENANT = "contoso7.onmicrosoft.com"


def guest(email: str = "ana.lima@consulting.example.com", **extra: Any) -> dict[str, Any]:
    local, _, domain = email.partition("@")
    user = {"id": GUEST_ID, "userPrincipalName": f"{local}_{domain}#EXT#@{TENANT}", "accountEnabled": True,
            "userType": "Guest", "displayName": "Ana Lima", "givenName": "Ana", "surname": "Lima", "mail": email,
            "externalUserState": "PendingAcceptance", "companyName": "Consulting"}
    user.update(extra)
    return user


MANAGER = {"id": "9b000000-0000-4000-8000-0000000000aa", "displayName": "Grace Hopper", "mail": "grace@contoso.com"}
BOSS = {"id": "9b000000-0000-4000-8000-0000000000bb", "displayName": "Ada Lovelace", "mail": "ada@contoso.com"}


def test_the_guest_address_comes_from_mail_then_other_mails_then_the_ext_upn():
    assert guest_address({"mail": "Ana@X.example"}) == "ana@x.example"
    assert guest_address({"otherMails": ["bo@y.example"]}) == "bo@y.example"
    assert guest_address({"userPrincipalName": f"cy_z.example#EXT#@{TENANT}"}) == "cy@z.example"
    assert guest_address({"userPrincipalName": "member@contoso.com"}) is None


def test_a_company_domain_is_looked_up_by_the_domain_field_and_created_when_missing():
    decision = decide_account(build_subject(guest()), DEMO)
    assert (decision.kind, decision.domain, decision.match_field, decision.create) == (
        "domain", "consulting.example.com", "Email_Domain__c", True)
    assert "mapping.yaml:" in decision.reason


def test_the_domain_map_comes_before_the_lookup():
    decision = decide_account(build_subject(guest("bo@agency.example.net")), DEMO)
    assert (decision.kind, decision.reference) == ("mapped", "Agency Example Inc")


@pytest.mark.parametrize("email", ["someone@gmail.com", "someone@Outlook.com", "x@hotmail.com", "y@icloud.com"])
def test_public_mail_domains_go_to_the_catch_all_and_never_create_an_account(email):
    decision = decide_account(build_subject(guest(email.lower())), DEMO)
    assert (decision.kind, decision.reference, decision.create) == ("catch_all", "Individual Guests", False)


def test_without_a_catch_all_a_public_domain_guest_gets_no_account():
    mapping = parse_mapping_text("guests: {extra_public_domains: [freemail.example]}\n", "m.yaml")
    decision = decide_account(build_subject(guest("x@freemail.example")), mapping)
    assert decision.kind == "none" and "public mail domain freemail.example" in decision.reason


def test_websites_compare_by_host_and_two_accounts_with_one_domain_are_a_problem_not_a_guess():
    assert website_host("https://www.Partner.example.org/about") == "partner.example.org"
    rows = [{"Id": "001A", "Website": "https://www.partner.example.org"}, {"Id": "001B", "Website": "other.org"}]
    assert pick_account(rows, "Website", "partner.example.org") == ("001A", None)
    rows.append({"Id": "001C", "Website": "partner.example.org/"})
    found, problem = pick_account(rows, "Website", "partner.example.org")
    assert found is None and problem and "001A, 001C" in problem


def test_a_new_account_is_named_from_the_company_and_keyed_by_the_domain():
    values, problems = new_account_values(build_subject(guest()), DEMO, ACCOUNT)
    assert values == {"Name": "Consulting", "Email_Domain__c": "consulting.example.com", "Type": "Partner",
                      "Website": "https://consulting.example.com"}
    assert problems == []
    nameless, _ = new_account_values(build_subject(guest(companyName=None)), DEMO, ACCOUNT)
    assert nameless["Name"] == "consulting.example.com"


def test_a_new_guest_contact_has_every_mapped_field_and_the_account():
    assert DEMO.enrichment is not None
    subject = build_subject(guest(department="Advisory", city="Lisbon"), [MANAGER, BOSS],
                            chain_spec=DEMO.enrichment.manager_chain)
    plan = plan_contact(subject, DEMO, ContactMatch("create"), CONTACT, account_id="001X", guest=True)
    assert plan.action == "create"
    assert plan.fields == {
        "FirstName": "Ana", "LastName": "Lima", "Email": "ana.lima@consulting.example.com",
        "Company_Name__c": "Consulting", "Invitation_State__c": "PendingAcceptance", "Relationship__c": "Partner",
        "Entra_Status__c": "Active", "Department": "Advisory", "MailingCity": "Lisbon",
        "Manager_Name__c": "Grace Hopper", "Manager_Email__c": "grace@contoso.com",
        "Manager_Chain__c": "Grace Hopper > Ada Lovelace", "Entra_Object_Id__c": GUEST_ID, "AccountId": "001X",
    }
    assert "mapping.yaml:" in plan.rules["Relationship__c"]


def test_a_relationship_rule_by_group_or_domain_wins_over_the_default():
    by_group = build_subject(guest(), groups=[{"id": "g1", "displayName": "Distributors"}])
    plan = plan_contact(by_group, DEMO, ContactMatch("create"), CONTACT, account_id=None, guest=True)
    assert plan.fields["Relationship__c"] == "Distributor"
    by_domain = build_subject(guest("bo@agency.example.net"))
    plan = plan_contact(by_domain, DEMO, ContactMatch("create"), CONTACT, account_id=None, guest=True)
    assert plan.fields["Relationship__c"] == "Client"


def test_a_redeemed_invitation_updates_only_what_changed_and_never_moves_the_contact_to_another_account():
    before = build_subject(guest())
    created = plan_contact(before, DEMO, ContactMatch("create"), CONTACT, account_id="001X", guest=True)
    record = {"Id": "003C", **created.fields, "AccountId": "001MovedBySales"}
    after = build_subject(guest(externalUserState="Accepted"))
    plan = plan_contact(after, DEMO, ContactMatch("link", record, "stored link"), CONTACT, account_id="001X",
                        guest=True)
    assert (plan.action, plan.contact_id, plan.fields) == ("update", "003C", {"Invitation_State__c": "Accepted"})
    assert plan.before == {"Invitation_State__c": "PendingAcceptance"}
    same = plan_contact(before, DEMO, ContactMatch("link", {**record, "Invitation_State__c": "PendingAcceptance"}),
                        CONTACT, account_id="001X", guest=True)
    assert same.action == "noop"


def test_values_longer_than_the_contact_field_are_cut_and_unknown_fields_are_left_out():
    long_first = "A" * 60  # givenName holds 64, Contact.FirstName 40
    mapping = parse_mapping_text("guests:\n  contact:\n    FirstName: givenName\n    LastName: surname\n"
                                 "    Nickname__c: displayName\n", "m.yaml")
    plan = plan_contact(build_subject(guest(givenName=long_first)), mapping, ContactMatch("create"), CONTACT,
                        account_id=None, guest=True)
    assert plan.fields["FirstName"] == "A" * 40
    assert "Nickname__c" not in plan.fields
    assert [(f, where) for f, _m, where in plan.problems] == [("Nickname__c", "m.yaml:5")]


def test_contacts_are_matched_by_stored_link_then_link_field_then_email():
    subject = build_subject(guest())
    by_email = {"Id": "003E", "Email": "Ana.Lima@consulting.example.com"}
    by_field = {"Id": "003F", "Entra_Object_Id__c": GUEST_ID}
    stored = {"Id": "003S"}
    rows = [by_email, by_field, stored]
    assert match_contact(subject, rows, stored_contact_id="003S", link_field="Entra_Object_Id__c").rule == \
        "stored link"
    assert match_contact(subject, rows, stored_contact_id=None, link_field="Entra_Object_Id__c").contact_id == "003F"
    found = match_contact(subject, [by_email], stored_contact_id=None, link_field="Entra_Object_Id__c")
    assert (found.kind, found.contact_id, found.rule) == ("link", "003E", "Email")
    assert match_contact(subject, [], stored_contact_id=None, link_field=None).kind == "create"


def test_two_contacts_with_the_email_or_one_linked_to_someone_else_is_a_review_not_a_guess():
    subject = build_subject(guest())
    twins = [{"Id": "003A", "Email": "ana.lima@consulting.example.com"},
             {"Id": "003B", "Email": "ana.lima@consulting.example.com"}]
    review = match_contact(subject, twins, stored_contact_id=None, link_field="Entra_Object_Id__c")
    assert review.kind == "review" and "003A, 003B" in (review.message or "")
    taken = [{"Id": "003A", "Email": "ana.lima@consulting.example.com", "Entra_Object_Id__c": "someone-else"}]
    assert match_contact(subject, taken, stored_contact_id=None, link_field="Entra_Object_Id__c").kind == "review"
    owned = match_contact(subject, twins[:1], stored_contact_id=None, link_field=None, owners={"003A": "other"})
    assert owned.kind == "review"


def test_a_removed_guest_marks_the_contact_inactive_once():
    plan = plan_removed(DEMO, {"Id": "003C", "Entra_Status__c": "Active"})
    assert (plan.action, plan.fields, plan.before) == ("update", {"Entra_Status__c": "Inactive"},
                                                       {"Entra_Status__c": "Active"})
    assert plan_removed(DEMO, {"Id": "003C", "Entra_Status__c": "Inactive"}).action == "noop"


def test_account_enrichment_keeps_a_value_when_entra_has_none():
    with_country = plan_account(build_subject(guest(country="Portugal")), DEMO, {"Id": "001X"}, ACCOUNT)
    assert with_country.fields == {"BillingCountry": "Portugal"}
    without = plan_account(build_subject(guest()), DEMO, {"Id": "001X", "BillingCountry": "Spain"}, ACCOUNT)
    assert without.action == "noop"


def test_mapping_problems_across_the_crm_sections_name_their_lines():
    from shared.mapping import check_mapping_text

    text = ("guests:\n  link_field: Entra_Object_Id__c\n  contact:\n    LastName: surname\n    Entra_Object_Id__c: id\n"
            "enrichment:\n  contact:\n    LastName: surname\n  link_field: Other__c\n")
    problems = [str(p) for p in check_mapping_text(text, "m.yaml")]
    assert any("m.yaml:5" in p and "Entra_Object_Id__c is set by guests.link_field" in p for p in problems)
    assert any("m.yaml:8" in p and "also mapped in guests.contact" in p for p in problems)
    assert any("m.yaml:9" in p and "use the same Contact field" in p for p in problems)
    assert any("requests" in p for p in [str(p) for p in check_mapping_text(
        "requests: {upn_format: '{first}@x'}\n", "m.yaml")])
