"""`idsync mapping check --org`: the `offboarding:` section's names against the org and the tenant.

Why before anything runs: a queue that does not take Leads, a misspelt fallback user or an `open` filter naming a
field the object lacks would otherwise surface at a leaver's transfer as a review item per record. Here each is one
line with the file position. `check_offboarding_names` is pure; `read_org_facts` does the reading (one composite
call for the names, one query per `open` filter, LIMIT 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from simple_salesforce.format import format_soql

from shared.errors import IdsyncError, PermanentError
from shared.mapping.loader import MappingProblem
from shared.mapping.model import GUID, Mapping
from shared.mapping.offboarding import RuleKind
from shared.mapping.source import Path

#: An id no record has: the filter check must not read anyone's records.
_NOBODY = "005000000000000AAA"


@dataclass(frozen=True)
class OrgFacts:
    users: AbcMapping[str, bool] = field(default_factory=dict)  # Username (lower-cased) -> IsActive
    queues: AbcMapping[str, frozenset[str]] = field(default_factory=dict)  # DeveloperName -> objects it takes
    public_groups: frozenset[str] = frozenset()
    filter_errors: AbcMapping[str, str] = field(default_factory=dict)  # object -> Salesforce's answer to its query
    entra_groups: Collection[str] | None = None  # display names and ids; None: not checked


def _problem(mapping: Mapping, path: Path, message: str, name: str = "", known: Collection[str] = ()) -> MappingProblem:
    line, column = mapping.position(path)
    close = difflib.get_close_matches(name, list(known), n=1) if name else []
    return MappingProblem(mapping.filename, line, column, message, f"did you mean '{close[0]}'?" if close else None)


def check_offboarding_names(mapping: Mapping, facts: OrgFacts) -> list[MappingProblem]:
    section = mapping.offboarding
    if section is None:
        return []
    problems: list[MappingProblem] = []

    def user(path: Path, username: str, label: str) -> None:
        active = facts.users.get(username.lower())
        if active is None:
            problems.append(_problem(mapping, path, f"{label} '{username}' does not exist in the org", username,
                                     list(facts.users)))
        elif not active:
            problems.append(_problem(mapping, path, f"{label} '{username}' is inactive"))

    if section.fallback_owner:
        user(("offboarding", "fallback_owner"), section.fallback_owner, "fallback owner")
    for sobject, spec in section.objects.items():
        if sobject in facts.filter_errors:
            error = facts.filter_errors[sobject]
            problems.append(_problem(mapping, ("offboarding", "objects", sobject),
                                     f"the open records of {sobject} cannot be queried: {error}"))
        for index, rule in enumerate(spec.rules):
            path: Path = ("offboarding", "objects", sobject, "rules", index)
            name = rule.name or ""
            if rule.kind is RuleKind.USER:
                user(path, name, "user")
            elif rule.kind is RuleKind.ROUND_ROBIN and name not in facts.public_groups:
                problems.append(_problem(mapping, path, f"public group '{name}' does not exist in the org", name,
                                         facts.public_groups))
            elif rule.kind is RuleKind.QUEUE:
                takes = facts.queues.get(name)
                if takes is None:
                    problems.append(_problem(mapping, path, f"queue '{name}' does not exist in the org", name,
                                             list(facts.queues)))
                elif sobject not in takes:
                    supported = ", ".join(sorted(takes)) or "nothing"
                    problems.append(_problem(mapping, path, f"queue '{name}' does not take {sobject} records (it "
                                             f"takes {supported}; Setup > Queues > {name} > Supported Objects)"))
    if section.leave_of_absence is not None and facts.entra_groups is not None:
        folded = {g.casefold() for g in facts.entra_groups}
        for index, group in enumerate(section.leave_of_absence.groups):
            if group.casefold() not in folded:
                problems.append(_problem(mapping, ("offboarding", "leave_of_absence", "groups", index),
                                         f"Entra group '{group}' does not exist in the tenant", group,
                                         list(facts.entra_groups)))
    return sorted(problems, key=lambda p: (p.line, p.column))


def read_org_facts(sf: Any, mapping: Mapping, graph: Any = None) -> OrgFacts:
    """What `check_offboarding_names` compares against, read from the org (and, with `graph`, the tenant)."""
    section = mapping.offboarding
    if section is None:
        return OrgFacts()
    rules = [rule for spec in section.objects.values() for rule in spec.rules]
    usernames = sorted({r.user for r in rules if r.user} | ({section.fallback_owner} if section.fallback_owner
                                                             else set()))
    queries = {
        "users": format_soql("SELECT Username, IsActive FROM User WHERE Username IN {}", usernames or [""]),
        "groups": "SELECT Id, DeveloperName, Type FROM Group WHERE Type IN ('Queue', 'Regular')",
        "queue_objects": "SELECT QueueId, SobjectType FROM QueueSobject",
    }
    answers = dict(zip(queries, sf.query_many(list(queries.values())), strict=True))
    takes: dict[str, set[str]] = {}
    for row in answers["queue_objects"]:
        takes.setdefault(str(row["QueueId"]), set()).add(str(row["SobjectType"]))
    groups = answers["groups"]
    filter_errors: dict[str, str] = {}
    for sobject in section.objects:
        condition = section.open_filter(sobject)
        soql = format_soql(f"SELECT Id FROM {sobject} WHERE OwnerId = {{}}", _NOBODY)
        if condition:
            soql += f" AND ({condition})"
        try:
            sf.query_all(soql + " LIMIT 1")
        except PermanentError as err:
            filter_errors[sobject] = f"{err.code}: {err.message}" if err.code else err.message
    entra_groups: list[str] | None = None
    if graph is not None and section.leave_of_absence is not None:
        entra_groups = []
        names = list(section.leave_of_absence.groups)
        ids = [g for g in names if GUID.match(g)]
        try:
            for name, found in graph.groups_by_name([g for g in names if g not in ids]).items():
                if found:
                    entra_groups.append(name)
            entra_groups += list(graph.groups_by_ids(ids)) if ids else []
        except IdsyncError:
            entra_groups = None
    return OrgFacts(
        users={str(r["Username"]).lower(): bool(r.get("IsActive")) for r in answers["users"]},
        queues={str(g["DeveloperName"]): frozenset(takes.get(str(g["Id"]), ())) for g in groups
                if g.get("Type") == "Queue"},
        public_groups=frozenset(str(g["DeveloperName"]) for g in groups if g.get("Type") == "Regular"),
        filter_errors=filter_errors,
        entra_groups=entra_groups,
    )
