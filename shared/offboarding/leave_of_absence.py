"""Is a disabled user on leave rather than leaving? A member (transitively) of a configured Entra group is.

Why it matters: parental leave, sabbaticals and long sickness are disabled in Entra too, but such people come back:
deactivating them would free their licence to someone else and reassigning their records would scatter their
pipeline. On leave they are frozen only (log-in blocked at once, exactly as fast as a leaver); the licence and the
records stay, and re-enabling them in Entra unfreezes them (the sync lane's reactivation path).

One Graph call (`transitiveMemberOf`, ids and display names), made only when the mapping names leave-of-absence
groups and only for a disabled user: a soft- or hard-deleted user is a leaver whatever groups they were in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shared.entra_status import DISABLED
from shared.mapping.model import Mapping


def leave_groups(mapping: Mapping | None) -> list[str]:
    section = mapping.offboarding if mapping is not None else None
    if section is None or section.leave_of_absence is None:
        return []
    return list(section.leave_of_absence.groups)


def on_leave_of_absence(graph: Any, entra_id: str, status: str, mapping: Mapping | None) -> bool:
    """True when `entra_id` is disabled and a transitive member of a leave-of-absence group (by id or display name,
    case ignored)."""
    wanted = {g.casefold() for g in leave_groups(mapping)}
    if not wanted or status != DISABLED:
        return False
    url: str | None = f"users/{quote(entra_id, safe='')}/transitiveMemberOf"
    params: dict[str, Any] | None = {"$select": "id,displayName", "$top": "999"}
    while url:
        page = graph.request("GET", url, params=params).json()
        params = None
        for group in page.get("value", []):
            if not isinstance(group, dict):
                continue
            names = {str(group.get("id") or "").casefold(), str(group.get("displayName") or "").casefold()}
            if names & wanted:
                return True
        url = page.get("@odata.nextLink")
    return False
