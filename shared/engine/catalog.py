"""What the Salesforce org offers, by the names the mapping uses: read once by the I/O part and passed to every plan.

Why names -> ids here and not in the mapping: the same mapping serves a sandbox org and production, whose ids
differ. Why unknown names are not exceptions: one misspelt permission set must not stop everyone's profile and
fields; the plan turns it into a review item naming the mapping line, and `idsync mapping check` reports it ahead.
The reverse indexes (id -> name) are built once here, because every plan needs them to name what a user holds.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class PermissionSetInfo(NamedTuple):
    """A permission set's id and its `LicenseId`: a PermissionSetLicense id when the set needs one."""

    id: str
    license_id: str | None = None


@dataclass(frozen=True, slots=True)
class FieldMeta:
    """The parts of a User field's describe the plan checks before writing."""

    type: str = "string"
    length: int | None = None
    nillable: bool = True
    picklist_values: frozenset[str] | None = None
    restricted: bool = False
    updateable: bool = True
    createable: bool = True
    defaulted_on_create: bool = False

    @property
    def required_on_create(self) -> bool:
        """Salesforce refuses an insert without it (REQUIRED_FIELD_MISSING)."""
        return self.createable and not self.nillable and not self.defaulted_on_create and self.type != "boolean"

    @classmethod
    def from_describe(cls, field_json: AbcMapping[str, Any]) -> FieldMeta:
        """From one entry of `sobjects/User/describe` `fields`."""
        picklist = field_json.get("picklistValues") or []
        values = frozenset(str(p["value"]) for p in picklist if p.get("active", True) and "value" in p)
        calculated = bool(field_json.get("calculated"))
        length = field_json.get("length")
        return cls(
            type=str(field_json.get("type") or "string"),
            length=int(length) if length else None,
            nillable=bool(field_json.get("nillable", True)),
            picklist_values=values or None,
            restricted=bool(field_json.get("restrictedPicklist")),
            updateable=bool(field_json.get("updateable", True)) and not calculated,
            createable=bool(field_json.get("createable", True)) and not calculated,
            defaulted_on_create=bool(field_json.get("defaultedOnCreate")),
        )


@dataclass(frozen=True)
class Catalog:
    """Names -> ids (roles by Name and by DeveloperName; permission sets by Name with their LicenseId; public
    groups, queues and permission set groups by DeveloperName); permission set licences id -> DeveloperName;
    User field metadata (empty: no length, picklist or field-existence checks)."""

    profiles: AbcMapping[str, str] = field(default_factory=dict)
    roles: AbcMapping[str, str] = field(default_factory=dict)
    permission_sets: AbcMapping[str, PermissionSetInfo] = field(default_factory=dict)
    permission_set_groups: AbcMapping[str, str] = field(default_factory=dict)
    public_groups: AbcMapping[str, str] = field(default_factory=dict)  # Group Type=Regular
    queues: AbcMapping[str, str] = field(default_factory=dict)  # Group Type=Queue
    permission_set_licenses: AbcMapping[str, str] = field(default_factory=dict)  # Id -> DeveloperName
    user_fields: AbcMapping[str, FieldMeta] = field(default_factory=dict)

    # reverse indexes, built once
    profile_names: dict[str, str] = field(init=False, repr=False)
    role_names: dict[str, str] = field(init=False, repr=False)
    permission_set_names: dict[str, str] = field(init=False, repr=False)
    permission_set_licence_of: dict[str, str | None] = field(init=False, repr=False)  # PS id -> its LicenseId
    permission_set_group_names: dict[str, str] = field(init=False, repr=False)
    group_keys: dict[str, str] = field(init=False, repr=False)
    licence_ids: dict[str, str] = field(init=False, repr=False)
    required: frozenset[str] = field(init=False, repr=False)  # User fields Salesforce requires on create

    def __post_init__(self) -> None:
        ps = {name: PermissionSetInfo(*info) for name, info in self.permission_sets.items()}
        object.__setattr__(self, "permission_sets", ps)
        object.__setattr__(self, "profile_names", _reverse(self.profiles))
        object.__setattr__(self, "role_names", _reverse(self.roles))
        object.__setattr__(self, "permission_set_names", {info.id: name for name, info in reversed(ps.items())})
        object.__setattr__(self, "permission_set_licence_of", {info.id: info.license_id for info in ps.values()})
        object.__setattr__(self, "permission_set_group_names", _reverse(self.permission_set_groups))
        keys = {gid: f"group:{name}" for name, gid in self.public_groups.items()}
        keys.update({qid: f"queue:{name}" for name, qid in self.queues.items()})
        object.__setattr__(self, "group_keys", keys)
        object.__setattr__(self, "licence_ids", {name: lid for lid, name in self.permission_set_licenses.items()})
        object.__setattr__(self, "required", frozenset(n for n, m in self.user_fields.items() if m.required_on_create))

    def required_fields(self) -> frozenset[str]:
        return self.required


def _reverse(names: AbcMapping[str, str]) -> dict[str, str]:
    """id -> the first name listed for it (roles are listed by Name before DeveloperName)."""
    out: dict[str, str] = {}
    for name, sf_id in names.items():
        out.setdefault(sf_id, name)
    return out
