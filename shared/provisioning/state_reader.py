"""What Salesforce holds for a batch of users, read with as few API calls as the data allows.

Steady state (every user linked): ONE composite call with four queries — the linked User rows, their permission set
assignments, licence assignments and group/queue memberships. Users seen for the first time add their matching
candidates to the first query (`Id IN (...) OR FederationIdentifier IN (...) OR ...`, split by length), and the
entitlements of users just matched to an existing record take one more call. Joiners with no record take nothing
more: there is nothing to read.

Why the length split: Salesforce refuses over-long SOQL (and URLs); 200 users' UPNs, e-mails and employee numbers
can exceed a safe size, so terms are spread over several queries of the same call (composite allows five).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from simple_salesforce.format import format_soql

from shared.engine import (
    CandidateIndex,
    EntraUser,
    MatchOutcome,
    SalesforceUserState,
    match_user,
    matching_query_terms,
    user_fields_to_read,
)
from shared.grants import Grants
from shared.identity_links import IdentityLinks, Link
from shared.mapping import Mapping

#: Keep each query's WHERE clause under this many characters (URL-encoded it roughly doubles; Salesforce caps a
#: SOQL statement at 100,000 characters and request URIs well below that).
MAX_WHERE_CHARS = 6000
#: Composite takes at most five queries per call.
QUERIES_PER_CALL = 5


def _linked(link: Link | None) -> str | None:
    return link.sf_user_id if link is not None else None


@dataclass
class UserContext:
    """Everything the engine needs for one user besides the mapping and the catalogue."""

    entra: EntraUser
    link: Link | None
    state: SalesforceUserState
    match: MatchOutcome | None  # None: the user's stored link was used as is


@dataclass
class BatchState:
    users: dict[str, UserContext] = field(default_factory=dict)


def _split_in(field_name: str, values: list[str], budget: int) -> list[str]:
    """`Field IN (...)` clauses, each under `budget` characters."""
    clauses: list[str] = []
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(value) + 4
        if chunk and size + cost > budget:
            clauses.append(format_soql(f"{field_name} IN {{}}", chunk))
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        clauses.append(format_soql(f"{field_name} IN {{}}", chunk))
    return clauses


def candidate_queries(select: str, terms: dict[str, set[str]], budget: int = MAX_WHERE_CHARS) -> list[str]:
    """SOQL over User fetching every record any term names, as few queries as the length budget allows."""
    clauses: list[str] = []
    for name in sorted(terms):
        clauses.extend(_split_in(name, sorted(terms[name]), budget))
    queries: list[str] = []
    current: list[str] = []
    size = 0
    for clause in clauses:
        if current and size + len(clause) + 4 > budget:
            queries.append(f"SELECT {select} FROM User WHERE {' OR '.join(current)}")
            current, size = [], 0
        current.append(clause)
        size += len(clause) + 4
    if current:
        queries.append(f"SELECT {select} FROM User WHERE {' OR '.join(current)}")
    return queries


def entitlement_queries(sf_ids: list[str]) -> list[str]:
    """Assignments and memberships of these users: permission sets and groups, licences, public groups and queues."""
    queries: list[str] = []
    for clause in _split_in("AssigneeId", sf_ids, MAX_WHERE_CHARS):
        queries.append(f"SELECT Id, AssigneeId, PermissionSetId, PermissionSetGroupId FROM PermissionSetAssignment "
                       f"WHERE {clause}")
        queries.append(f"SELECT Id, AssigneeId, PermissionSetLicenseId FROM PermissionSetLicenseAssign WHERE {clause}")
    for clause in _split_in("UserOrGroupId", sf_ids, MAX_WHERE_CHARS):
        queries.append(f"SELECT Id, GroupId, UserOrGroupId FROM GroupMember WHERE {clause}")
    return queries


@dataclass
class Entitlements:
    permission_sets: dict[str, dict[str, str]] = field(default_factory=dict)
    permission_set_groups: dict[str, dict[str, str]] = field(default_factory=dict)
    licences: dict[str, dict[str, str]] = field(default_factory=dict)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, rows: list[dict[str, Any]], assignable_ps: set[str]) -> None:
        for row in rows:
            if "PermissionSetLicenseId" in row:
                licences = self.licences.setdefault(str(row["AssigneeId"]), {})
                licences[str(row["PermissionSetLicenseId"])] = str(row["Id"])
            elif "AssigneeId" in row:
                assignee = str(row["AssigneeId"])
                if row.get("PermissionSetGroupId"):
                    self.permission_set_groups.setdefault(assignee, {})[str(row["PermissionSetGroupId"])] = str(
                        row["Id"])
                elif row.get("PermissionSetId") and str(row["PermissionSetId"]) in assignable_ps:
                    # the profile's own permission set is not an entitlement (every user has one)
                    self.permission_sets.setdefault(assignee, {})[str(row["PermissionSetId"])] = str(row["Id"])
            elif "UserOrGroupId" in row:
                self.groups.setdefault(str(row["UserOrGroupId"]), {})[str(row["GroupId"])] = str(row["Id"])


class StateReader:
    def __init__(self, sf: Any, links: IdentityLinks, grants: Grants) -> None:
        self.sf = sf
        self.links = links
        self.grants = grants
        self.calls = 0  # composite calls made, for benchmarks and tests

    def _run(self, queries: list[str]) -> list[list[dict[str, Any]]]:
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(queries), QUERIES_PER_CALL):
            chunk = queries[start : start + QUERIES_PER_CALL]
            self.calls += 1
            results.extend(self.sf.query_many(chunk))
        return results

    def read(self, users: Iterable[EntraUser], mapping: Mapping, assignable_ps: Iterable[str]) -> BatchState:
        users = list(users)
        assignable = set(assignable_ps)
        ids = [u.id for u in users]
        links = self.links.links_of(ids)
        manager_ids = sorted({u.manager_id for u in users if u.manager_id})
        manager_links = self.links.links_of(manager_ids) if manager_ids else {}
        granted = self.grants.of(ids)

        select_fields = list(dict.fromkeys([*user_fields_to_read(mapping),
                                            *([mapping.link_field] if mapping.link_field else [])]))
        select = ", ".join(select_fields)
        linked_ids = sorted({link.sf_user_id for link in links.values() if link and link.sf_user_id})
        unlinked = [u for u in users if not _linked(links[u.id])]
        # Without the `link` rule a stored link does not decide: every user needs its matching terms.
        needs_terms = unlinked if mapping.compiled.match_by_link else users
        terms = matching_query_terms(needs_terms, mapping) if needs_terms else {}
        if linked_ids:
            terms["Id"] = set(linked_ids)
        user_queries = candidate_queries(select, terms) if terms else []
        ent_queries = entitlement_queries(linked_ids) if linked_ids else []
        results = self._run(user_queries + ent_queries)
        records = [r for rows in results[: len(user_queries)] for r in rows]
        entitlements = Entitlements()
        for rows in results[len(user_queries):]:
            entitlements.add(rows, assignable)

        index = CandidateIndex.for_mapping(records, mapping)
        by_id = {str(r["Id"]): r for r in records}
        linked_elsewhere = self.links.entra_ids_of(sorted(by_id))

        # Users whose stored link points at a record that no longer exists are matched afresh (second pass).
        stale = [u for u in users if _linked(links[u.id]) and _linked(links[u.id]) not in by_id]
        if stale:
            more_terms = matching_query_terms(stale, mapping)
            if more_terms:
                more = [r for rows in self._run(candidate_queries(select, more_terms)) for r in rows]
                records.extend(more)
                by_id.update({str(r["Id"]): r for r in more})
                index = CandidateIndex.for_mapping(records, mapping)
                linked_elsewhere.update(self.links.entra_ids_of(sorted(str(r["Id"]) for r in more)))

        outcomes: dict[str, MatchOutcome] = {}
        for user in users:
            link = links[user.id]
            stored = link.sf_user_id if link else None
            outcomes[user.id] = match_user(user, mapping, stored, index, linked_elsewhere)

        # Entitlements of users matched to a record whose assignments were not read yet.
        newly = sorted({o.sf_user_id for o in outcomes.values()
                        if o.kind == "link" and o.sf_user_id and o.sf_user_id not in set(linked_ids)})
        if newly:
            for rows in self._run(entitlement_queries(newly)):
                entitlements.add(rows, assignable)

        batch = BatchState()
        for user in users:
            outcome = outcomes[user.id]
            record = by_id.get(outcome.sf_user_id or "") if outcome.kind == "link" else None
            manager_link = manager_links.get(user.manager_id or "") if user.manager_id else None
            batch.users[user.id] = user_context(user, links[user.id], outcome, record, entitlements,
                                                granted.get(user.id, frozenset()),
                                                manager_link.sf_user_id if manager_link else None)
        return batch


def user_context(user: EntraUser, link: Link | None, outcome: MatchOutcome, record: AbcMapping[str, Any] | None,
                 entitlements: Entitlements, granted: frozenset[str], manager_sf_id: str | None) -> UserContext:
    """What the engine needs for one user, from what was read for many (a batch here, the whole org for
    reconciliation): the matched record, its assignments, idsync's grants and the manager's Salesforce id."""
    sf_id = str(record["Id"]) if record else ""
    state = SalesforceUserState(
        user=record,
        permission_sets=entitlements.permission_sets.get(sf_id, {}),
        permission_set_groups=entitlements.permission_set_groups.get(sf_id, {}),
        licences=entitlements.licences.get(sf_id, {}),
        groups=entitlements.groups.get(sf_id, {}),
        granted=granted,
        manager_sf_id=manager_sf_id,
    )
    return UserContext(user, link, state, None if outcome.by_stored_link else outcome)
