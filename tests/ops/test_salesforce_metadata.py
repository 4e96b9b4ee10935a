"""ops/salesforce: the metadata an admin deploys to a real org holds every field idsync's CRM features use."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from shared.mapping import load_mapping
from shared.user_requests.record import FIELDS, OBJECT

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "ops" / "salesforce"
OBJECTS = BASE / "force-app" / "main" / "default" / "objects"
NS = {"md": "http://soap.sforce.com/2006/04/metadata"}
STANDARD_CONTACT = {"FirstName", "LastName", "Email", "Phone", "Title", "Department", "MobilePhone", "MailingCity",
                    "MailingCountry", "AccountId"}
STANDARD_ACCOUNT = {"Name", "Type", "Website", "BillingCountry", "BillingCity"}


def _shipped() -> set[str]:
    return {f"{p.parent.parent.name}.{p.name.removesuffix('.field-meta.xml')}" for p in OBJECTS.glob("*/fields/*.xml")}


def test_the_manifest_lists_exactly_the_shipped_object_and_fields():
    root = ET.parse(BASE / "package.xml").getroot()
    listed = {t.findtext("md:name", namespaces=NS): {m.text for m in t.findall("md:members", NS)}
              for t in root.findall("md:types", NS)}
    assert listed["CustomObject"] == {OBJECT}
    assert listed["CustomField"] == _shipped()
    assert (OBJECTS / OBJECT / f"{OBJECT}.object-meta.xml").exists()


def test_every_request_field_the_worker_reads_is_deployed():
    system = {"Id", "Name", "CreatedById", "SystemModstamp"}
    assert {f"{OBJECT}.{f}" for f in FIELDS if f not in system} <= _shipped()


def test_every_contact_and_account_field_of_the_demo_mapping_exists_in_a_real_org_after_the_deploy():
    mapping = load_mapping(ROOT / "examples" / "mapping.yaml")
    assert mapping.guests is not None and mapping.enrichment is not None
    guests = mapping.guests
    contact = {*guests.contact, *mapping.enrichment.contact, guests.link_field, guests.invitation_state_field,
               guests.relationship.field if guests.relationship else None, guests.removed.field if guests.removed
               else None} - {None}
    account = {*guests.accounts.fields, guests.accounts.match_field, guests.accounts.key_field,
               *mapping.enrichment.account} - {None}
    shipped = _shipped()
    assert {f"Contact.{f}" for f in contact if f not in STANDARD_CONTACT} <= shipped
    assert {f"Account.{f}" for f in account if f not in STANDARD_ACCOUNT} <= shipped
