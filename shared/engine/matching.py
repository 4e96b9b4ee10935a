"""Finding the Salesforce user an Entra user already has, without ever guessing.

Why every rule must agree: two records that might be the same person are the case where existing products merge
the wrong accounts. So the stored link decides alone (it was established before); otherwise every applicable rule
is evaluated and exactly one record across all of them links, none creates, and anything else is a review item
with the candidates listed and nothing written. A record carrying another Entra user's id in the link field, or
linked to another Entra user in idsync's store (`linked_elsewhere`), is never taken over.

Why `matching_query_terms`: for a batch of up to 200 users the caller fetches every candidate with ONE query
(`WHERE Id IN (...) OR FederationIdentifier IN (...) OR ...`), then matches each user here against that result.

Comparison: Username and Email ignore case (Salesforce treats them so); every other field, FederationIdentifier
included (case-sensitive in Salesforce), compares exactly.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.engine.desired import desired_values
from shared.engine.entra import EntraUser
from shared.engine.reviews import ReviewCode, ReviewItem
from shared.mapping.model import Mapping

CASE_INSENSITIVE_FIELDS = frozenset({"Username", "Email"})
STORED_LINK = "link"


def _norm(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    return text.casefold() if field in CASE_INSENSITIVE_FIELDS else text


@dataclass(frozen=True, slots=True)
class MatchOutcome:
    kind: Literal["link", "create", "review"]
    sf_user_id: str | None = None
    rule: str | None = None  # "link" for the stored link, else the rule, e.g. "Email AND EmployeeNumber"
    review: ReviewItem | None = None
    where: str | None = None  # the rule's mapping line

    @classmethod
    def link(cls, sf_user_id: str, rule: str, where: str | None = None) -> MatchOutcome:
        return cls("link", sf_user_id, rule, where=where)

    @classmethod
    def create(cls) -> MatchOutcome:
        return cls("create")

    @property
    def by_stored_link(self) -> bool:
        return self.kind == "link" and self.rule == STORED_LINK


class CandidateIndex:
    """Candidate User records indexed by Id and by (field, compared value); build once per batch."""

    def __init__(self, records: Iterable[AbcMapping[str, Any]], fields: Iterable[str]) -> None:
        self.by_id: dict[str, AbcMapping[str, Any]] = {}
        self._index: dict[tuple[str, str], list[str]] = {}
        fields = tuple(fields)
        for record in records:
            sf_id = str(record.get("Id") or "")
            if not sf_id or sf_id in self.by_id:
                continue
            self.by_id[sf_id] = record
            for name in fields:
                value = _norm(name, record.get(name))
                if value is not None:
                    self._index.setdefault((name, value), []).append(sf_id)

    @classmethod
    def for_mapping(cls, records: Iterable[AbcMapping[str, Any]], mapping: Mapping) -> CandidateIndex:
        return cls(records, mapping.compiled.match_fields)

    def lookup(self, name: str, value: str) -> list[str]:
        return self._index.get((name, value), [])


def matching_query_terms(
    entra_users: Iterable[EntraUser], mapping: Mapping, stored_links: Iterable[str | None] = ()
) -> dict[str, set[str]]:
    """Per Salesforce User field, the values to look for across a batch (`Id` for stored links), so one SOQL
    `WHERE F1 IN (...) OR F2 IN (...)` fetches every candidate. Fields without values are left out."""
    fields = mapping.compiled.match_fields
    terms: dict[str, set[str]] = {name: set() for name in fields}
    for user in entra_users:
        for name, value in desired_values(user, mapping, fields).items():
            if value is not None and value != "":
                terms[name].add(value if isinstance(value, str) else str(value))
    ids = {sf_id for sf_id in stored_links if sf_id}
    if ids and mapping.compiled.match_by_link:
        terms["Id"] = ids
    return {name: values for name, values in terms.items() if values}


def match_user(
    entra_user: EntraUser,
    mapping: Mapping,
    stored_link_sf_id: str | None,
    candidates: Sequence[AbcMapping[str, Any]] | CandidateIndex,
    linked_elsewhere: Container[str] = frozenset(),
) -> MatchOutcome:
    """Link, create or review for one user. `candidates` are the records fetched with `matching_query_terms` (the
    stored link's record included while it exists); `linked_elsewhere` holds Salesforce ids idsync has linked to
    other Entra users (a set, or a mapping Salesforce id -> Entra id, where this user's own entry does not count)."""
    compiled = mapping.compiled
    index = candidates if isinstance(candidates, CandidateIndex) else CandidateIndex(candidates,
                                                                                    compiled.match_fields)
    if compiled.match_by_link and stored_link_sf_id and stored_link_sf_id in index.by_id:
        return MatchOutcome.link(stored_link_sf_id, STORED_LINK, compiled.match_link_where)

    values = desired_values(entra_user, mapping, compiled.match_fields)
    hits: list[tuple[str, str, list[str]]] = []  # (rule text, where, record ids)
    for rule in compiled.match_rules:
        wanted = [_norm(name, values.get(name)) for name in rule.fields]
        if any(v is None for v in wanted):
            continue  # a rule needs every one of its fields
        found: set[str] | None = None
        for name, value in zip(rule.fields, wanted, strict=True):
            with_value = set(index.lookup(name, value or ""))
            found = with_value if found is None else found & with_value
            if not found:
                break
        if found:
            hits.append((rule.text, rule.where, sorted(found)))
    if not hits:
        return MatchOutcome.create()

    every: list[str] = sorted({sf_id for _text, _where, ids in hits for sf_id in ids})
    several = next((h for h in hits if len(h[2]) > 1), None)
    if several is not None:
        text, where, ids = several
        return _review(entra_user, ReviewCode.MATCH_SEVERAL, f"matching rule '{text}' finds {len(ids)} Salesforce "
                       f"users ({', '.join(ids)}): link one by hand", where, every)
    if len(every) > 1:
        described = "; ".join(f"'{text}' -> {ids[0]}" for text, _where, ids in hits)
        return _review(entra_user, ReviewCode.MATCH_CONFLICT, f"matching rules disagree ({described}): link one "
                       "by hand", hits[0][1], every)
    sf_id = every[0]
    record = index.by_id[sf_id]
    owner = record.get(mapping.link_field) if mapping.link_field else None
    if isinstance(linked_elsewhere, AbcMapping):
        taken = linked_elsewhere.get(sf_id) not in (None, entra_user.id)
    else:
        taken = sf_id in linked_elsewhere
    if taken or (owner and owner != entra_user.id):
        return _review(entra_user, ReviewCode.LINKED_ELSEWHERE, f"Salesforce user {sf_id} (matched by "
                       f"'{hits[0][0]}') is already linked to another Entra user", hits[0][1], every)
    return MatchOutcome.link(sf_id, hits[0][0], hits[0][1])


def _review(entra_user: EntraUser, code: ReviewCode, message: str, where: str, candidates: list[str]) -> MatchOutcome:
    item = ReviewItem(code, entra_user.id, entra_user.upn, "match", f"{entra_user.upn}: {message} ({where})", where,
                      tuple(candidates))
    return MatchOutcome("review", review=item)
