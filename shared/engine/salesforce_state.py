"""What Salesforce holds for one user now, plus what idsync itself granted earlier: the other input of a plan.

Why `granted`: idsync removes only what it granted. Salesforce does not record who assigned a permission set, so
idsync keeps its own list (in Redis, by the I/O part) of entitlement keys it added; anything else a user holds was
given by an admin and is left alone. Keys: `ps:<Name>`, `psg:<DeveloperName>`, `psl:<DeveloperName>`,
`group:<DeveloperName>`, `queue:<DeveloperName>`, and `role`.

The reader must leave out the assignment of the profile's own permission set (`PermissionSet.IsOwnedByProfile =
true`): every user has one, and it is no entitlement of its own.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from shared.mapping.checks import produced_fields
from shared.mapping.model import Mapping


def entitlement_key(kind: str, name: str) -> str:
    """`("ps", "Sales_Cloud_User")` -> `"ps:Sales_Cloud_User"`: the form of `granted` and `Plan.unmanaged`."""
    return f"{kind}:{name}"


@dataclass(frozen=True, slots=True)
class SalesforceUserState:
    """Assignment maps: PermissionSetId -> PermissionSetAssignment Id, PermissionSetGroupId -> PermissionSetAssignment
    Id, PermissionSetLicenseId -> PermissionSetLicenseAssign Id, GroupId (public group or queue) -> GroupMember Id.
    Ids as the REST API returns them (18 characters)."""

    user: AbcMapping[str, Any] | None = None  # the User record's fields; None when there is no user
    permission_sets: AbcMapping[str, str] = field(default_factory=dict)
    permission_set_groups: AbcMapping[str, str] = field(default_factory=dict)
    licences: AbcMapping[str, str] = field(default_factory=dict)
    groups: AbcMapping[str, str] = field(default_factory=dict)
    granted: frozenset[str] = field(default_factory=frozenset)
    manager_sf_id: str | None = None  # the Entra manager's Salesforce user id via the link store; None: not yet

    @property
    def sf_user_id(self) -> str | None:
        return str(self.user["Id"]) if self.user and self.user.get("Id") else None


_ALWAYS = ("Id", "Username", "IsActive", "ProfileId", "UserRoleId", "FederationIdentifier", "Email", "LastName")


def user_fields_to_read(mapping: Mapping) -> list[str]:
    """The User fields the reader must SELECT for `plan` and `match_user` to see everything they compare."""
    names = dict.fromkeys(_ALWAYS)
    names.update(dict.fromkeys(sorted(produced_fields(mapping))))
    if mapping.manager is not None:
        names[mapping.manager.field] = None
    names.update(dict.fromkeys(("Alias", "CommunityNickname", "TimeZoneSidKey", "LocaleSidKey", "EmailEncodingKey",
                                "LanguageLocaleKey")))
    return list(names)
