"""`mapping check` with credentials: every name the mapping uses, checked against the org and the tenant.

Why: a misspelt profile found at run time is a review item per user; found here it is one line before anything
runs. Pure: the I/O part reads the `Catalog` and the tenant's group names (and ids) and passes them in.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from shared.engine.catalog import Catalog
from shared.mapping.checks import produced_fields
from shared.mapping.loader import MappingProblem
from shared.mapping.model import Mapping
from shared.mapping.source import Path


def _problem(mapping: Mapping, path: Path, message: str, name: str = "", known: Iterable[str] = (), *,
             key: bool = False) -> MappingProblem:
    line, column = mapping.position(path, key=key)
    close = difflib.get_close_matches(name, list(known), n=1) if name else []
    return MappingProblem(mapping.filename, line, column, message, f"did you mean '{close[0]}'?" if close else None)


def check_names(
    mapping: Mapping, catalog: Catalog, entra_groups: Collection[str] | None = None
) -> list[MappingProblem]:
    """Names the org (or, with `entra_groups` = display names and/or ids, the tenant) does not know."""
    problems: list[MappingProblem] = []

    def check(path: Path, label: str, name: str, known: Collection[str]) -> None:
        if name not in known:
            problems.append(_problem(mapping, path, f"{label} '{name}' does not exist in the org", name, known))

    for i, rule in enumerate(mapping.group_rules):
        if rule.profile is not None:
            check(("group_rules", i, "profile"), "profile", rule.profile, catalog.profiles)
        if rule.role is not None:
            check(("group_rules", i, "role"), "role", rule.role, catalog.roles)
        lists: tuple[tuple[str, str, list[str], Collection[str]], ...] = (
            ("permission_sets", "permission set", rule.permission_sets, catalog.permission_sets),
            ("permission_set_groups", "permission set group", rule.permission_set_groups,
             catalog.permission_set_groups),
            ("permission_set_licenses", "permission set licence", rule.permission_set_licenses,
             catalog.licence_ids),
            ("public_groups", "public group", rule.public_groups, catalog.public_groups),
            ("queues", "queue", rule.queues, catalog.queues),
        )
        for key, label, names, known in lists:
            for j, name in enumerate(names):
                check(("group_rules", i, key, j), label, name, known)

    if catalog.user_fields:
        fields = catalog.user_fields
        for name in sorted(produced_fields(mapping)):
            path: Path = ("attributes", name) if name in mapping.attributes else (
                ("link_field",) if name == mapping.link_field else ("username",))
            meta = fields.get(name)
            if meta is None:
                problems.append(_problem(mapping, path, f"User field '{name}' does not exist in the org", name, fields,
                                         key=True))
            elif not (meta.createable or meta.updateable):
                problems.append(_problem(mapping, path, f"User field '{name}' is read-only", key=True))
        if mapping.manager is not None and mapping.manager.field not in fields:
            problems.append(_problem(mapping, ("manager", "field"),
                                     f"User field '{mapping.manager.field}' does not exist in the org",
                                     mapping.manager.field, fields))

    if entra_groups is not None:
        folded = {g.casefold(): g for g in entra_groups}
        for path, group in entra_group_references(mapping):
            if group.casefold() not in folded:
                problems.append(_problem(mapping, path, f"Entra group '{group}' does not exist in the tenant",
                                         group, folded.values()))
    return sorted(problems, key=lambda p: (p.line, p.column))


def entra_group_references(mapping: Mapping) -> list[tuple[Path, str]]:
    """Every Entra group the mapping names, with where: scope, group rules, guest relationship rules and the groups
    a Salesforce request may ask for. A misspelt one would otherwise match nobody, silently."""
    refs: list[tuple[Path, str]] = [(("scope", "groups", i), g) for i, g in enumerate(mapping.scope.groups)]
    refs += [(("group_rules", i, "group"), r.group) for i, r in enumerate(mapping.group_rules)]
    if mapping.guests is not None and mapping.guests.relationship is not None:
        refs += [(("guests", "relationship", "rules", i, "group"), r.group)
                 for i, r in enumerate(mapping.guests.relationship.rules) if r.group is not None]
    if mapping.requests is not None:
        refs += [(("requests", "allowed_groups", i), g) for i, g in enumerate(mapping.requests.allowed_groups)]
    return refs
