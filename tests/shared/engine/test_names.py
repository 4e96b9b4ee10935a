"""`check_names`: the names a mapping uses, checked against the org's catalogue and the tenant's groups."""

from __future__ import annotations

from shared.engine import check_names
from shared.mapping import parse_mapping_text
from tests.shared.engine.builders import DEMO_MAPPING, GROUP_IDS, demo_mapping, sandbox_catalog

CATALOG = sandbox_catalog()

BROKEN = """\
scope:
  groups: [All Employes]
attributes:
  Title: jobTitle
  Cost_Center__c: employeeOrgData.costCenter
group_rules:
  - group: Sales Team West
    profile: Sales Usr
    role: Account Executive Wst
    permission_sets: [Sales_Cloud_User, Marketing_Usr]
    permission_set_groups: [Sales_Bundel]
    public_groups: [All_Sale]
    queues: [Support_Queu]
"""


def test_the_demo_mapping_names_only_what_the_sandbox_org_and_tenant_have() -> None:
    assert check_names(demo_mapping(), CATALOG, list(GROUP_IDS)) == []


def test_every_unknown_name_is_reported_at_its_line_with_the_closest_known_name() -> None:
    mapping = parse_mapping_text(BROKEN, "m.yaml")
    found = [str(p) for p in check_names(mapping, CATALOG, [*GROUP_IDS, *GROUP_IDS.values()])]
    assert found == [
        "m.yaml:2:12: Entra group 'All Employes' does not exist in the tenant (fix: did you mean 'All Employees'?)",
        "m.yaml:5:3: User field 'Cost_Center__c' does not exist in the org",
        "m.yaml:8:14: profile 'Sales Usr' does not exist in the org (fix: did you mean 'Sales User'?)",
        "m.yaml:9:11: role 'Account Executive Wst' does not exist in the org "
        "(fix: did you mean 'Account Executive West'?)",
        "m.yaml:10:41: permission set 'Marketing_Usr' does not exist in the org (fix: did you mean 'Marketing_User'?)",
        "m.yaml:11:29: permission set group 'Sales_Bundel' does not exist in the org "
        "(fix: did you mean 'Sales_Bundle'?)",
        "m.yaml:12:21: public group 'All_Sale' does not exist in the org (fix: did you mean 'All_Sales'?)",
        "m.yaml:13:14: queue 'Support_Queu' does not exist in the org (fix: did you mean 'Support_Queue'?)",
    ]


def test_groups_may_be_named_by_object_id() -> None:
    mapping = parse_mapping_text(f"scope:\n  groups: ['{GROUP_IDS['Marketing']}']\n", "m.yaml")
    assert check_names(mapping, CATALOG, [*GROUP_IDS, *GROUP_IDS.values()]) == []


def test_without_tenant_groups_only_the_org_is_checked() -> None:
    assert check_names(parse_mapping_text(DEMO_MAPPING.read_text(), "mapping.yaml"), CATALOG) == []


def test_groups_named_by_guest_rules_and_by_requests_are_checked_too() -> None:
    mapping = parse_mapping_text("""\
guests:
  relationship:
    field: Relationship__c
    rules:
      - {group: Distributers, value: Distributor}
      - {domains: [agency.example.net], value: Client}
requests:
  enabled: true
  allowed_groups: [All Employees, Markting]
""", "m.yaml")
    found = [str(p) for p in check_names(mapping, CATALOG, [*GROUP_IDS, *GROUP_IDS.values()])]
    assert [f.split(": ", 1)[1] for f in found] == [
        "Entra group 'Distributers' does not exist in the tenant (fix: did you mean 'Distributors'?)",
        "Entra group 'Markting' does not exist in the tenant (fix: did you mean 'Marketing'?)",
    ]
