"""Review items: what the engine will not decide alone, each naming the user, the field or entitlement, and the
mapping line to look at.

Why items and not exceptions: a bad value or an unknown name concerns one field of one user; raising would turn it
into a retry storm or a dead letter per user, and would block the parts of the plan that are fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ReviewCode(StrEnum):
    UNKNOWN_PROFILE = "unknown_profile"
    UNKNOWN_ROLE = "unknown_role"
    UNKNOWN_PERMISSION_SET = "unknown_permission_set"
    UNKNOWN_PERMISSION_SET_GROUP = "unknown_permission_set_group"
    UNKNOWN_PERMISSION_SET_LICENSE = "unknown_permission_set_license"
    UNKNOWN_PUBLIC_GROUP = "unknown_public_group"
    UNKNOWN_QUEUE = "unknown_queue"
    UNKNOWN_FIELD = "unknown_field"
    NO_PROFILE = "no_profile"
    VALUE_TOO_LONG = "value_too_long"
    PICKLIST_VALUE = "picklist_value"
    REQUIRED_FIELD_MISSING = "required_field_missing"
    MATCH_SEVERAL = "match_several"
    MATCH_CONFLICT = "match_conflict"
    LINKED_ELSEWHERE = "linked_elsewhere"


@dataclass(frozen=True, slots=True)
class ReviewItem:
    code: ReviewCode
    entra_id: str
    upn: str
    target: str  # Salesforce field, entitlement key (ps:Name) or "match"
    message: str  # one line for a person
    where: str | None = None  # mapping line, e.g. "mapping.yaml:14"
    candidates: tuple[str, ...] = ()  # Salesforce user ids, for matching reviews

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "entra_id": self.entra_id,
            "upn": self.upn,
            "target": self.target,
            "message": self.message,
            "where": self.where,
            "candidates": list(self.candidates),
        }
