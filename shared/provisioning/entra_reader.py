"""What Entra says now about a batch of users: attributes and manager from Graph, mapped-group membership from the
group snapshots.

Why not `transitiveMemberOf` per user: a batch of 200 users would cost 200 more Graph requests (and throttling
budget). The engine only needs membership of the groups the mapping names, and `GroupMembership` keeps exactly
those, refreshed from Graph whenever a group changes. Users are read 15 per request, 20 requests per $batch.

Mapped groups are named by display name or object id; names are resolved to ids through Graph once and cached in
Redis. A name that resolves to several groups (display names are not unique in Entra) matches all of them, and
`mapping check` warns about it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.engine import EntraUser, graph_properties
from shared.group_membership import GroupMembership
from shared.logging import get_logger
from shared.mapping import Mapping

log = get_logger("idsync.entra_reader")

GROUP_IDS_KEY = "idsync:mapping:group_ids"  # hash: group reference -> JSON [{id, displayName}]
GROUP_IDS_TTL_S = 600.0
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def group_references(mapping: Mapping) -> list[str]:
    """Every group the mapping names (scope and group rules), in file order, each once."""
    refs = [*mapping.scope.groups, *(rule.group for rule in mapping.group_rules)]
    return list(dict.fromkeys(refs))


@dataclass(frozen=True)
class MappedGroups:
    """The mapping's group references resolved to Entra groups: id -> display name."""

    names: dict[str, str]
    unresolved: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        return sorted(self.names)


def resolve_groups(graph: Any, redis: Any, mapping: Mapping, *, max_age_s: float = GROUP_IDS_TTL_S) -> MappedGroups:
    """Resolve display names and ids to groups; cached in Redis for `max_age_s` (renames are rare)."""
    refs = group_references(mapping)
    cached: dict[str, Any] = {}
    raw = redis.hgetall(GROUP_IDS_KEY) if redis is not None else {}
    now = time.time()
    for ref, value in raw.items():
        entry = json.loads(value)
        if now - float(entry.get("at", 0)) <= max_age_s:
            cached[ref] = entry["groups"]
    missing = [r for r in refs if r not in cached]
    if missing:
        by_id = graph.groups_by_ids([r for r in missing if _OBJECT_ID.match(r)])
        by_name = graph.groups_by_name([r for r in missing if not _OBJECT_ID.match(r)])
        fresh: dict[str, list[dict[str, str]]] = {}
        for ref in missing:
            found = [by_id[ref]] if ref in by_id else by_name.get(ref, [])
            fresh[ref] = [{"id": str(g["id"]), "displayName": str(g.get("displayName") or "")} for g in found]
        cached.update(fresh)
        if redis is not None and fresh:
            redis.hset(GROUP_IDS_KEY, mapping={r: json.dumps({"groups": g, "at": now}) for r, g in fresh.items()})
    names: dict[str, str] = {}
    unresolved: list[str] = []
    for ref in refs:
        groups = cached.get(ref) or []
        if not groups:
            unresolved.append(ref)
        for group in groups:
            names[group["id"]] = group["displayName"]
    return MappedGroups(names, tuple(unresolved))


def forget_group_ids(redis: Any) -> None:
    """After a mapping reload or a group rename/deletion: resolve names again on the next batch."""
    redis.delete(GROUP_IDS_KEY)


class EntraReader:
    """Reads `EntraUser`s for a batch; the caller ensures the snapshots of `groups` are ready."""

    def __init__(self, graph: Any, snapshots: GroupMembership) -> None:
        self.graph = graph
        self.snapshots = snapshots

    def read(self, entra_ids: Iterable[str], mapping: Mapping, groups: MappedGroups) -> dict[str, EntraUser | None]:
        """id -> the user as Entra has it now, or None when Graph no longer has it (deleted: a leaver)."""
        ids = list(dict.fromkeys(entra_ids))
        found = self.graph.users_by_ids(ids, graph_properties(mapping), expand_manager=True)
        present = [i for i in ids if i in found]
        memberships = self.snapshots.memberships(present, groups.ids)
        out: dict[str, EntraUser | None] = {}
        for entra_id in ids:
            user_json = found.get(entra_id)
            if user_json is None:
                out[entra_id] = None
                continue
            group_json = [{"id": gid, "displayName": groups.names.get(gid, "")} for gid in memberships[entra_id]]
            manager = user_json.get("manager")
            out[entra_id] = EntraUser.from_graph(user_json, group_json, manager if isinstance(manager, dict) else None)
        return out
