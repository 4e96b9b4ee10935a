"""A group changed in Entra: which users' plans may have changed with it?

If the mapping names the group (scope or a group rule), its member snapshot is read again from Graph and whoever
joined or left is returned. A group the mapping does not name matters only through nesting: if it sits (directly or
transitively) inside mapped groups, those are read again. Anything else is none of idsync's business.
A mapped group that was deleted counts as emptied: its last known members are returned (their plans decide; the
revocation lane checks scope again before deactivating anyone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import NotFound
from shared.group_membership import GroupMembership
from shared.mapping import Mapping
from shared.provisioning.entra_reader import resolve_groups


@dataclass(frozen=True)
class GroupChange:
    mapped_groups: tuple[str, ...]  # the mapped groups read again (empty: the group does not matter)
    users: frozenset[str]  # who joined or left them


def members_changed(graph: Any, redis: Any, mapping: Mapping, group_id: str) -> GroupChange:
    groups = resolve_groups(graph, redis, mapping)
    if group_id in groups.names:
        targets = [group_id]
    else:
        try:
            parents = graph.transitive_group_ids_of(group_id, kind="groups")
        except NotFound:
            parents = set()
        targets = sorted(parents & set(groups.ids))
    snapshots = GroupMembership(redis)
    changed: set[str] = set()
    for target in targets:
        try:
            changed |= snapshots.refresh(graph, target)
        except NotFound:
            changed |= snapshots.members(target)
            snapshots.replace(target, set())
    return GroupChange(tuple(targets), frozenset(changed))
