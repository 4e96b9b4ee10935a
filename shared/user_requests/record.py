"""A `User_Provisioning_Request__c` record as the reverse flow reads it, and what makes it unusable.

Why check before any Graph call: a request missing its last name or naming an unknown type must fail with a clear
`Error__c` and create nothing in Entra; a half-made account is worse than none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from typing import Any

OBJECT = "User_Provisioning_Request__c"
FIELDS = (
    "Id", "Name", "Status__c", "Request_Type__c", "First_Name__c", "Last_Name__c", "Email__c", "Department__c",
    "Job_Title__c", "Manager_UPN__c", "Entra_Groups__c", "Requested_For__c", "Entra_Id__c", "Target_User__c",
    "CreatedById", "SystemModstamp",
)

APPROVED = "Approved"
IN_PROGRESS = "In Progress"
COMPLETED = "Completed"
FAILED = "Failed"
#: Statuses the worker acts on: Approved (new), In Progress (an earlier attempt of idsync's stopped mid-way).
ACTIONABLE = frozenset({APPROVED, IN_PROGRESS})

CREATE = "Create"
INVITE = "Invite"
TYPES = frozenset({CREATE, INVITE})

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_object_id(value: str) -> bool:
    return bool(_GUID.match(value))


def _text(record: AbcMapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class ProvisioningRequest:
    id: str
    name: str
    status: str
    type: str
    first_name: str | None
    last_name: str | None
    email: str | None
    department: str | None
    job_title: str | None
    manager_upn: str | None
    groups: tuple[str, ...]
    requested_upn: str | None
    entra_id: str | None
    target_user: str | None
    created_by: str | None

    @classmethod
    def from_record(cls, record: AbcMapping[str, Any]) -> ProvisioningRequest:
        groups = tuple(dict.fromkeys(g.strip() for g in (_text(record, "Entra_Groups__c") or "").split(";")
                                     if g.strip()))
        return cls(
            id=str(record["Id"]),
            name=_text(record, "Name") or str(record["Id"]),
            status=_text(record, "Status__c") or "",
            type=_text(record, "Request_Type__c") or CREATE,
            first_name=_text(record, "First_Name__c"),
            last_name=_text(record, "Last_Name__c"),
            email=(_text(record, "Email__c") or "").lower() or None,
            department=_text(record, "Department__c"),
            job_title=_text(record, "Job_Title__c"),
            manager_upn=_text(record, "Manager_UPN__c"),
            groups=groups,
            requested_upn=(_text(record, "Requested_For__c") or "").lower() or None,
            entra_id=_text(record, "Entra_Id__c"),
            target_user=_text(record, "Target_User__c"),
            created_by=_text(record, "CreatedById"),
        )

    @property
    def display_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or (self.email or self.name)

    def problems(self) -> list[str]:
        """Why this request cannot be carried out as written (empty: it can be tried)."""
        out: list[str] = []
        if self.type not in TYPES:
            out.append(f"Request_Type__c '{self.type}' is not handled by idsync (Create or Invite)")
            return out
        if self.type == CREATE and not self.last_name:
            out.append("Last_Name__c is empty")
        if self.type == CREATE and not (self.first_name or self.last_name):
            out.append("First_Name__c and Last_Name__c are empty")
        if self.type == INVITE and not self.email:
            out.append("Email__c is empty (an invitation goes to an address)")
        if self.email and not _EMAIL.match(self.email):
            out.append(f"Email__c '{self.email}' is not an email address")
        if self.requested_upn and "@" not in self.requested_upn:
            out.append(f"Requested_For__c '{self.requested_upn}' is not a UPN (name@domain)")
        return out
