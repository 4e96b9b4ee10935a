"""What Graph says about a user right now: enabled, disabled, soft-deleted (in deletedItems) or hard-deleted.

Why one function for every reader: events are hints, so the revocation lane, the sync lane and the offboarding steps
all decide from a fresh read; the four states and the soft-deleted UPN rule must be the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GRAPH_SELECT = ["id", "accountEnabled", "userPrincipalName", "mail", "employeeId", "userType"]

ENABLED = "enabled"
DISABLED = "disabled"
SOFT_DELETED = "soft_deleted"
HARD_DELETED = "hard_deleted"


@dataclass(frozen=True)
class EntraState:
    """What Graph says about a user right now."""

    status: str
    upn: str | None
    user_type: str | None = None  # Member or Guest, when Graph said

    @property
    def enabled(self) -> bool:
        return self.status == ENABLED


def read_entra_user(graph: Any, entra_id: str) -> EntraState:
    """Enabled, disabled, soft-deleted (in deletedItems) or hard-deleted (gone everywhere)."""
    user = graph.get_user(entra_id, select=GRAPH_SELECT)
    if user is not None:
        status = DISABLED if user.get("accountEnabled") is False else ENABLED
        return EntraState(status, user.get("userPrincipalName"), user.get("userType"))
    deleted = graph.get_deleted_user(entra_id)
    if deleted is not None:
        return EntraState(SOFT_DELETED, undeleted_upn(entra_id, deleted.get("userPrincipalName")))
    return EntraState(HARD_DELETED, None)


def undeleted_upn(entra_id: str, upn: str | None) -> str | None:
    """Graph renames a soft-deleted user's UPN to `{objectId without dashes}{original UPN}`."""
    prefix = entra_id.replace("-", "")
    if upn and upn.startswith(prefix) and len(upn) > len(prefix):
        return upn[len(prefix) :]
    return upn
