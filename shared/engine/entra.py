"""What Entra says about one user right now: the engine's only input from Graph.

Why transitive groups here: scope and group rules count membership through nested groups (which Microsoft's own
connector does not), and the engine must stay pure, so the caller reads `/users/{id}/transitiveMemberOf` once and
hands the result in. Group references in the mapping match a group's object id or display name, case-insensitively;
`group_keys` holds both, folded once per user.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.mapping.model import Mapping

Deleted = Literal["soft", "hard"]
_GROUP_TYPE = "#microsoft.graph.group"


@dataclass(frozen=True, slots=True, eq=False)
class EntraUser:
    id: str
    upn: str
    enabled: bool
    user_type: str
    attrs: AbcMapping[str, Any]
    groups: frozenset[tuple[str, str]] = frozenset()  # transitive (object id, display name)
    manager_id: str | None = None
    deleted: Deleted | None = None
    group_keys: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        keys = {part.casefold() for pair in self.groups for part in pair if part}
        object.__setattr__(self, "group_keys", frozenset(keys))

    @classmethod
    def from_graph(
        cls,
        user_json: AbcMapping[str, Any],
        transitive_groups_json: Iterable[AbcMapping[str, Any]] = (),
        manager_json: AbcMapping[str, Any] | None = None,
        *,
        deleted: Deleted | None = None,
    ) -> EntraUser:
        """From Graph JSON: the user (with the properties of `graph_properties(mapping)`), the `value` items of
        `transitiveMemberOf` (directory roles and administrative units are skipped) and `GET /users/{id}/manager`
        (None when Graph answers 404). `accountEnabled` must have been selected: guessing "enabled" for a user Graph
        did not describe could provision a leaver."""
        if "accountEnabled" not in user_json:
            raise ValueError("the Graph user JSON lacks accountEnabled ($select it)")
        groups = frozenset(
            (str(g["id"]), str(g.get("displayName") or ""))
            for g in transitive_groups_json
            if g.get("id") and g.get("@odata.type", _GROUP_TYPE) == _GROUP_TYPE
        )
        manager_id = str(manager_json["id"]) if manager_json and manager_json.get("id") else None
        return cls(
            id=str(user_json["id"]),
            upn=str(user_json.get("userPrincipalName") or ""),
            enabled=user_json.get("accountEnabled") is True,
            user_type=str(user_json.get("userType") or "Member"),
            attrs=user_json,
            groups=groups,
            manager_id=manager_id,
            deleted=deleted,
        )

    @classmethod
    def gone(cls, entra_id: str, upn: str = "") -> EntraUser:
        """A hard-deleted user, known only by id (and the UPN idsync stored with its link)."""
        return cls(id=entra_id, upn=upn, enabled=False, user_type="Member", attrs={"id": entra_id}, deleted="hard")


#: Graph properties the engine itself reads besides those the mapping names.
_ALWAYS = ("id", "userPrincipalName", "accountEnabled", "userType", "displayName", "givenName", "surname", "mail",
           "mailNickname")


def graph_properties(mapping: Mapping) -> list[str]:
    """The `$select` list for reading a user: every top-level Graph property this mapping refers to."""
    compiled = mapping.compiled
    paths: list[tuple[str, ...]] = [compiled.username_source, *compiled.locale_sources]
    for attribute in compiled.attributes:
        if attribute.source is not None:
            paths.append(attribute.source)
        for template in (attribute.template, attribute.default):
            if template is not None:
                paths.extend(template.paths)
    paths.extend(f.path for f in compiled.filters)
    names = dict.fromkeys(_ALWAYS)
    names.update(dict.fromkeys(p[0] for p in paths))
    return list(names)
