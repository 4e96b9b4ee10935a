"""What the I/O part must read for the engine: the Graph properties and the Salesforce User fields a mapping uses."""

from __future__ import annotations

from shared.engine import graph_properties, user_fields_to_read
from shared.mapping import Mapping
from tests.shared.engine.builders import demo_mapping


def test_graph_properties_cover_every_attribute_template_filter_and_locale_source() -> None:
    mapping = Mapping.model_validate({
        "scope": {"filters": [{"attribute": "employeeType", "equals": "Employee"}]},
        "attributes": {"Division": "employeeOrgData.division", "Title": {"template": "{jobTitle} ({companyName})"},
                       "LastName": {"source": "surname", "default": "{displayName}"}},
        "locale": {"sources": ["preferredLanguage"]},
    })
    selected = graph_properties(mapping)
    assert {"employeeType", "employeeOrgData", "jobTitle", "companyName", "surname", "displayName",
            "preferredLanguage", "accountEnabled", "userPrincipalName", "mailNickname"} <= set(selected)
    assert len(selected) == len(set(selected))


def test_user_fields_to_read_cover_what_plan_and_matching_compare() -> None:
    fields = user_fields_to_read(demo_mapping())
    assert {"Id", "IsActive", "ProfileId", "UserRoleId", "ManagerId", "Entra_Object_Id__c", "Title", "MobilePhone",
            "EmployeeNumber", "FederationIdentifier", "Username", "Email"} <= set(fields)
    assert len(fields) == len(set(fields))
