"""Test inputs for the engine: the demo mapping, a catalogue shaped like the sandbox seed's org, Entra users, and a
tiny simulated Salesforce (`apply_to_state`) that applies a plan the way the executor will."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sandbox.salesforce.schema import default_schema
from shared.engine import Catalog, ChangeKind, EntraUser, FieldMeta, PermissionSetInfo, Plan, SalesforceUserState
from shared.mapping import Mapping, load_mapping

ROOT = Path(__file__).resolve().parents[3]
DEMO_MAPPING = ROOT / "examples" / "mapping.yaml"

GROUP_IDS = {
    "All Employees": "0a000000-0000-4000-8000-000000000001",
    "Sales Team West": "0a000000-0000-4000-8000-000000000002",
    "Sales Team East": "0a000000-0000-4000-8000-000000000003",
    "Account Executives": "0a000000-0000-4000-8000-000000000004",
    "Customer Support": "0a000000-0000-4000-8000-000000000005",
    "Marketing": "0a000000-0000-4000-8000-000000000006",
    "Engineering": "0a000000-0000-4000-8000-000000000007",
    "Distributors": "0a000000-0000-4000-8000-000000000008",
}


def sf_id(prefix: str, n: int) -> str:
    """An 18-character id with the object's key prefix, like the REST API returns."""
    return f"{prefix}{n:012d}AAA"


PROFILES = {name: sf_id("00e", i) for i, name in enumerate(
    ["System Administrator", "Standard User", "Sales User", "Standard Platform User", "Chatter Free User",
     "Identity User"], 1)}
ROLE_NAMES = ["CEO", "VP Sales", "Sales Manager West", "Sales Manager East", "Account Executive West",
              "Account Executive East", "VP Support", "Support Agent", "VP Marketing"]
ROLES = {name: sf_id("00E", i) for i, name in enumerate(ROLE_NAMES, 1)}
PSL = {"SalesCloudUserPsl": sf_id("0PL", 1)}
PERMISSION_SETS = {
    "Sales_Cloud_User": PermissionSetInfo(sf_id("0PS", 1), PSL["SalesCloudUserPsl"]),
    "Marketing_User": PermissionSetInfo(sf_id("0PS", 2)),
    "Service_Cloud_User": PermissionSetInfo(sf_id("0PS", 3)),
    "API_Only": PermissionSetInfo(sf_id("0PS", 4)),
}
PSGS = {"Sales_Bundle": sf_id("0PG", 1)}
PUBLIC_GROUPS = {"All_Sales": sf_id("00G", 1), "Support_Team": sf_id("00G", 2)}
QUEUES = {"Lead_Queue": sf_id("00G", 3), "Support_Queue": sf_id("00G", 4)}


def user_fields() -> dict[str, FieldMeta]:
    """The sandbox org's User describe, as the I/O part will read it from Salesforce."""
    return {name: FieldMeta.from_describe(f.describe()) for name, f in default_schema()["User"].fields.items()}


_USER_FIELDS = user_fields()


def sandbox_catalog(**overrides: Any) -> Catalog:
    roles = dict(ROLES)
    roles.update({name.replace(" ", ""): rid for name, rid in ROLES.items()})  # DeveloperName too
    values: dict[str, Any] = {
        "profiles": PROFILES,
        "roles": roles,
        "permission_sets": PERMISSION_SETS,
        "permission_set_groups": PSGS,
        "public_groups": PUBLIC_GROUPS,
        "queues": QUEUES,
        "permission_set_licenses": {lid: name for name, lid in PSL.items()},
        "user_fields": _USER_FIELDS,
    }
    values.update(overrides)
    return Catalog(**values)


_DEMO: Mapping | None = None


def demo_mapping() -> Mapping:
    global _DEMO
    if _DEMO is None:
        _DEMO = load_mapping(DEMO_MAPPING)
    return _DEMO


def entra_user(
    groups: Iterable[str] = ("All Employees",),
    *,
    entra_id: str = "7f3c1c9e-0b7d-4c8e-9a55-2d1f0e6b1a01",
    upn: str = "jane.smith@contoso.example.com",
    enabled: bool = True,
    user_type: str = "Member",
    manager_id: str | None = None,
    deleted: Any = None,
    **attrs: Any,
) -> EntraUser:
    """A member like the sandbox tenant's; `attrs` override Graph properties (None removes one)."""
    base: dict[str, Any] = {
        "id": entra_id,
        "userPrincipalName": upn,
        "accountEnabled": enabled,
        "userType": user_type,
        "displayName": "Jane Smith",
        "givenName": "Jane",
        "surname": "Smith",
        "mail": upn,
        "jobTitle": "Account Executive",
        "department": "Sales",
        "mobilePhone": "+1 206 555 0100",
        "employeeId": "E100042",
        "usageLocation": "US",
        "country": "United States",
        "employeeOrgData": {"division": "Go-To-Market", "costCenter": "CC-SAL-01"},
    }
    base.update(attrs)
    base = {k: v for k, v in base.items() if v is not None}
    group_pairs = [(GROUP_IDS.get(g, hashlib.md5(g.encode()).hexdigest()), g) for g in groups]
    return EntraUser.from_graph(
        base,
        [{"@odata.type": "#microsoft.graph.group", "id": gid, "displayName": name} for gid, name in group_pairs],
        {"id": manager_id} if manager_id else None,
        deleted=deleted,
    )


def existing_user(**fields: Any) -> dict[str, Any]:
    """A provisioned Salesforce user in step with `entra_user()` in All Employees only."""
    record: dict[str, Any] = {
        "Id": sf_id("005", 42),
        "Username": "jane.smith@contoso.example.com",
        "IsActive": True,
        "FirstName": "Jane",
        "LastName": "Smith",
        "Email": "jane.smith@contoso.example.com",
        "Title": "Account Executive",
        "Department": "Sales",
        "MobilePhone": "+1 206 555 0100",
        "EmployeeNumber": "E100042",
        "FederationIdentifier": "jane.smith@contoso.example.com",
        "Entra_Object_Id__c": "7f3c1c9e-0b7d-4c8e-9a55-2d1f0e6b1a01",
        "ProfileId": PROFILES["Standard User"],
        "UserRoleId": None,
        "ManagerId": None,
        "Alias": "jsmi1234",
        "CommunityNickname": "jane.smith.1234abcd",
        "TimeZoneSidKey": "America/Los_Angeles",
        "LocaleSidKey": "en_US",
        "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "en_US",
    }
    record.update(fields)
    return record


def apply_to_state(plan: Plan, state: SalesforceUserState) -> SalesforceUserState:
    """What Salesforce (and idsync's granted list) look like after every change of `plan` succeeded."""
    user = dict(state.user) if state.user is not None else None
    maps: dict[str, dict[str, str]] = {
        "ps": dict(state.permission_sets), "psg": dict(state.permission_set_groups), "psl": dict(state.licences),
        "group": dict(state.groups),
    }
    target_map = {
        ChangeKind.ADD_LICENCE: "psl", ChangeKind.REMOVE_LICENCE: "psl",
        ChangeKind.ADD_PERMISSION_SET: "ps", ChangeKind.REMOVE_PERMISSION_SET: "ps",
        ChangeKind.ADD_PERMISSION_SET_GROUP: "psg", ChangeKind.REMOVE_PERMISSION_SET_GROUP: "psg",
        ChangeKind.ADD_GROUP: "group", ChangeKind.REMOVE_GROUP: "group",
        ChangeKind.ADD_QUEUE: "group", ChangeKind.REMOVE_QUEUE: "group",
    }
    counter = 0
    for change in plan.changes:
        counter += 1
        if change.kind is ChangeKind.CREATE_USER:
            user = dict(change.after)
            user["Id"] = sf_id("005", int(hashlib.md5(plan.entra_id.encode()).hexdigest()[:8], 16))
            user["IsActive"] = True
        elif change.kind is ChangeKind.UPDATE_FIELD:
            assert user is not None
            user[change.target] = change.after
        elif change.kind is ChangeKind.SET_PROFILE:
            assert user is not None
            user["ProfileId"] = change.sf_id
        elif change.kind is ChangeKind.SET_ROLE:
            assert user is not None
            user["UserRoleId"] = change.sf_id
        elif change.kind is ChangeKind.DEPROVISION:
            assert user is not None
            user["IsActive"] = False
        elif change.kind in target_map:
            held = maps[target_map[change.kind]]
            assert change.sf_id is not None
            if change.kind.value.startswith("add_"):
                assert change.sf_id not in held, f"{change.kind} of something already held"
                held[change.sf_id] = sf_id("0Pa", counter)
            else:
                assert held.get(change.sf_id) == change.record_id, "removal must name the existing record"
                del held[change.sf_id]
    return replace(
        state,
        user=user,
        permission_sets=maps["ps"],
        permission_set_groups=maps["psg"],
        licences=maps["psl"],
        groups=maps["group"],
        granted=plan.granted_after,
    )
