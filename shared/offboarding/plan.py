"""THE offboarding decision: `offboarding_plan(leaver, records, directory, mapping)` -> `OffboardingPlan`, pure.

What a leaver's offboarding is, in order: freeze (log-in blocked at once), deactivate, give every open record a new
owner by the mapping's `offboarding:` rules, and (optionally) take back licences Salesforce keeps on inactive users.
`idsync offboard --dry-run` prints this plan and `workers/ownership_transfer.py` executes it: one implementation.

Decisions (docs/offboarding.md tells admins the same):
- enabled in Entra: nothing (a re-enabled user keeps everything; the sync lane reactivates them).
- disabled and a member of a leave-of-absence group: freeze only; licence and records stay.
- otherwise a leaver: freeze, deactivate, move records, reclaim licences if the mapping says so.
- A record's rules are tried in order; the first that yields an owner wins. A rule yields nothing when: the manager
  is missing, unlinked or inactive; the round-robin group has no active member; the queue does not exist or does not
  take the object (QueueSobject); the user is unknown or inactive. The executor feeds back what Salesforce refused
  (`Attempt`: `INACTIVE_OWNER_OR_USER`, a validation rule, ...) and the record goes to the rule after the one that
  failed. A record no rule places is `Unplaced`, with every reason, for a review item.
- The leaver is never their own new owner (a manager loop, a round-robin group they are still in).
- Round robin deals records out in a stable order (object, record id), so a dry run and the run agree.

No I/O here: the reader (`shared.offboarding.reader`) gathers the inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.mapping.model import Mapping
from shared.mapping.offboarding import Offboarding, OwnerRule, RuleKind

if TYPE_CHECKING:
    from rich.console import Console

ENABLED = "enabled"


class OffboardingMode(StrEnum):
    OFFBOARD = "offboard"
    LEAVE_OF_ABSENCE = "leave_of_absence"
    NOT_A_LEAVER = "not_a_leaver"
    NO_SALESFORCE_USER = "no_salesforce_user"


@dataclass(frozen=True, slots=True)
class OpenRecord:
    """One record the leaver owns that the `open` filter selects. `label` is for people (Name, CaseNumber...)."""

    id: str
    sobject: str
    owner_id: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class Owner:
    """A possible new owner: a user (`name` = Username) or a queue (`name` = DeveloperName)."""

    id: str
    name: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class Queue:
    id: str
    name: str
    sobjects: frozenset[str]  # what the queue may own (QueueSobject.SobjectType)


@dataclass(frozen=True, slots=True)
class HeldLicence:
    """Something the leaver holds that reclaim may take back: a permission set licence assignment (`psl`) or a
    permission set assignment (`ps`). `needs` is the licence id a permission set requires; `granted` says idsync
    granted it (only those permission sets are removed)."""

    kind: str  # "psl" | "ps"
    name: str
    sf_id: str  # PermissionSetLicense id / PermissionSet id
    assignment_id: str
    needs: str | None = None
    granted: bool = False

    @property
    def key(self) -> str:
        """The entitlement key in idsync's grant ledger (`shared.grants`)."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Leaver:
    entra_id: str
    upn: str | None
    entra_status: str  # enabled, disabled, soft_deleted, hard_deleted (workers.revocation's words)
    sf_user_id: str | None
    sf_active: bool | None = None
    sf_frozen: bool | None = None
    on_leave: bool = False  # a member of a leave-of-absence group (and disabled, not deleted)
    manager: Owner | None = None  # resolved by the reader: Salesforce ManagerId, else the Entra manager's link
    manager_source: str | None = None  # "Salesforce ManagerId" / "Entra manager"
    manager_note: str | None = None  # why there is none (e.g. "Entra manager x is not linked to Salesforce")


@dataclass(frozen=True)
class OwnerDirectory:
    """The owners the rules name, as Salesforce holds them now. A name missing here does not exist in the org."""

    users: AbcMapping[str, Owner] = field(default_factory=dict)  # by Username, lower-cased
    queues: AbcMapping[str, Queue] = field(default_factory=dict)  # by DeveloperName
    groups: AbcMapping[str, tuple[Owner, ...]] = field(default_factory=dict)  # public group -> its user members

    def user(self, username: str) -> Owner | None:
        return self.users.get(username.lower())


@dataclass(frozen=True, slots=True)
class Attempt:
    """What Salesforce answered when the executor gave `record_id` to `owner_id` under rule `rule_index`."""

    record_id: str
    rule_index: int
    owner_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RecordMove:
    record: OpenRecord
    owner_id: str
    owner_name: str
    rule_index: int
    rule: str  # e.g. "manager (Salesforce ManagerId) mapping.yaml:121"

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.record.sobject, "id": self.record.id, "label": self.record.label,
                "from": self.record.owner_id, "to": self.owner_id, "to_name": self.owner_name,
                "rule_index": self.rule_index, "rule": self.rule}


@dataclass(frozen=True, slots=True)
class Unplaced:
    record: OpenRecord
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.record.sobject, "id": self.record.id, "label": self.record.label,
                "owner": self.record.owner_id, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class OffboardingPlan:
    entra_id: str
    upn: str | None
    sf_user_id: str | None
    mode: OffboardingMode
    reason: str
    freeze: bool = False
    deactivate: bool = False
    moves: tuple[RecordMove, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()
    licences: tuple[HeldLicence, ...] = ()  # to remove, permission sets before the licences they need
    open_counts: AbcMapping[str, int] = field(default_factory=dict)  # object -> open records found
    bulk_objects: frozenset[str] = frozenset()  # objects whose moves go through Bulk API 2.0
    configured: bool = True  # the mapping has an offboarding section

    @property
    def record_count(self) -> int:
        return sum(self.open_counts.values())

    def moves_by_object(self) -> dict[str, list[RecordMove]]:
        out: dict[str, list[RecordMove]] = {}
        for move in self.moves:
            out.setdefault(move.record.sobject, []).append(move)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "entra_id": self.entra_id,
            "upn": self.upn,
            "sf_user_id": self.sf_user_id,
            "mode": self.mode.value,
            "reason": self.reason,
            "freeze": self.freeze,
            "deactivate": self.deactivate,
            "configured": self.configured,
            "open_records": dict(self.open_counts),
            "bulk_objects": sorted(self.bulk_objects),
            "moves": [m.to_dict() for m in self.moves],
            "unplaced": [u.to_dict() for u in self.unplaced],
            "licences": [{"kind": h.kind, "name": h.name, "assignment_id": h.assignment_id} for h in self.licences],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def render(self, console: Console) -> None:
        from shared.offboarding.plan_view import render_offboarding_plan

        render_offboarding_plan(self, console)


def offboarding_plan(
    leaver: Leaver,
    records: AbcMapping[str, Sequence[OpenRecord]],
    directory: OwnerDirectory,
    mapping: Mapping,
    *,
    licences: Sequence[HeldLicence] = (),
    attempts: AbcMapping[str, Sequence[Attempt]] | None = None,
    refused_owners: frozenset[str] = frozenset(),
) -> OffboardingPlan:
    """The plan for one user. `records` are the open records per object (as the reader found them, still owned by
    the leaver); `attempts` what Salesforce already refused per record; `refused_owners` owners Salesforce reported
    inactive meanwhile (INACTIVE_OWNER_OR_USER), skipped for every record."""
    section = mapping.offboarding

    def make(mode: OffboardingMode, reason: str, **values: Any) -> OffboardingPlan:
        return OffboardingPlan(leaver.entra_id, leaver.upn, leaver.sf_user_id, mode, reason,
                               configured=section is not None, **values)

    if leaver.sf_user_id is None:
        return make(OffboardingMode.NO_SALESFORCE_USER, "no Salesforce user is linked or matches: nothing to offboard")
    if leaver.entra_status == ENABLED:
        return make(OffboardingMode.NOT_A_LEAVER,
                    "enabled in Entra: not a leaver (disable or delete the user there first)")
    freeze = leaver.sf_frozen is not True
    if leaver.on_leave:
        return make(OffboardingMode.LEAVE_OF_ABSENCE, "disabled and a member of a leave-of-absence group: frozen "
                    "only; licence and records stay", freeze=freeze)
    deactivate = leaver.sf_active is not False
    status = ("out of the mapping's scope" if leaver.entra_status == "out_of_scope"
              else f"{leaver.entra_status.replace('_', '-')} in Entra")
    if section is None:
        return make(OffboardingMode.OFFBOARD, f"{status}; the mapping has no offboarding section, so "
                    "records stay with the leaver", freeze=freeze, deactivate=deactivate)

    placer = _Placer(leaver, directory, mapping, section, attempts or {}, refused_owners)
    moves: list[RecordMove] = []
    unplaced: list[Unplaced] = []
    counts: dict[str, int] = {}
    bulk: set[str] = set()
    for sobject in section.objects:
        found = sorted(records.get(sobject, ()), key=lambda r: r.id)
        counts[sobject] = len(found)
        placed = 0
        for record in found:
            outcome = placer.place(record)
            if isinstance(outcome, RecordMove):
                moves.append(outcome)
                placed += 1
            else:
                unplaced.append(outcome)
        if placed > section.bulk_threshold:
            bulk.add(sobject)
    reclaim = reclaimable(licences) if section.reclaim_licences else ()
    return make(OffboardingMode.OFFBOARD, f"{status}: frozen, deactivated, records re-owned", freeze=freeze,
                deactivate=deactivate, moves=tuple(moves), unplaced=tuple(unplaced), licences=reclaim,
                open_counts=counts, bulk_objects=frozenset(bulk))


def reclaimable(held: Sequence[HeldLicence]) -> tuple[HeldLicence, ...]:
    """What reclaim removes: the permission sets idsync granted, then every permission set licence no remaining
    permission set needs (Salesforce refuses to remove a licence a held permission set requires)."""
    sets = [h for h in held if h.kind == "ps" and h.granted]
    removed = {h.sf_id for h in sets}
    still_needed = {h.needs for h in held if h.kind == "ps" and h.sf_id not in removed and h.needs}
    licences = [h for h in held if h.kind == "psl" and h.sf_id not in still_needed]
    return (*sorted(sets, key=lambda h: h.name), *sorted(licences, key=lambda h: h.name))


class _Placer:
    """Finds each record's owner; holds the round-robin counters so the deal is stable within one plan."""

    def __init__(self, leaver: Leaver, directory: OwnerDirectory, mapping: Mapping, section: Offboarding,
                 attempts: AbcMapping[str, Sequence[Attempt]], refused_owners: frozenset[str]) -> None:
        self.leaver = leaver
        self.directory = directory
        self.mapping = mapping
        self.section = section
        self.attempts = attempts
        self.refused = refused_owners
        self.turns: dict[str, int] = {}

    def place(self, record: OpenRecord) -> RecordMove | Unplaced:
        spec = self.section.objects[record.sobject]
        tried = self.attempts.get(record.id, ())
        after = max((a.rule_index for a in tried), default=-1)
        reasons = [f"rule {a.rule_index + 1} ({spec.rules[a.rule_index].describe()}): Salesforce refused owner "
                   f"{a.owner_id}: {a.code}: {a.message}" for a in tried if a.rule_index < len(spec.rules)]
        refused_here = {a.owner_id for a in tried}
        for index, rule in enumerate(spec.rules):
            if index <= after:
                continue
            owner, why = self._owner(rule, record)
            if owner is not None and owner.id in refused_here:
                why = f"{owner.name} already refused this record (see above)"
                owner = None
            if owner is None:
                reasons.append(f"rule {index + 1} ({rule.describe()}): {why}")
                continue
            where = self.mapping.where(("offboarding", "objects", record.sobject, "rules", index))
            return RecordMove(record, owner.id, owner.name, index, f"{self._rule_text(rule)} ({where})")
        if not reasons:
            reasons.append("no rule")
        return Unplaced(record, tuple(reasons))

    def _rule_text(self, rule: OwnerRule) -> str:
        if rule.kind is RuleKind.MANAGER and self.leaver.manager_source:
            return f"manager ({self.leaver.manager_source})"
        if rule.kind is RuleKind.FALLBACK:
            return f"fallback owner {self.section.fallback_owner}"
        return rule.describe()

    def _usable(self, owner: Owner | None, label: str) -> tuple[Owner | None, str]:
        if owner is None:
            return None, f"{label} does not exist in Salesforce"
        if owner.id == self.leaver.sf_user_id:
            return None, f"{label} is the leaver"
        if not owner.active or owner.id in self.refused:
            return None, f"{label} {owner.name} is inactive"
        return owner, ""

    def _owner(self, rule: OwnerRule, record: OpenRecord) -> tuple[Owner | None, str]:
        kind = rule.kind
        if kind is RuleKind.MANAGER:
            if self.leaver.manager is None:
                return None, self.leaver.manager_note or "the leaver has no manager in Salesforce or Entra"
            return self._usable(self.leaver.manager, "the manager")
        if kind is RuleKind.FALLBACK:
            name = self.section.fallback_owner or ""
            return self._usable(self.directory.user(name), f"the fallback owner {name}")
        if kind is RuleKind.USER:
            name = rule.user or ""
            return self._usable(self.directory.user(name), f"user {name}")
        if kind is RuleKind.QUEUE:
            name = rule.queue or ""
            queue = self.directory.queues.get(name)
            if queue is None:
                return None, f"queue {name} does not exist in Salesforce"
            if record.sobject not in queue.sobjects:
                return None, (f"queue {name} does not take {record.sobject} records (Setup > Queues > {name} > "
                              "Supported Objects)")
            return Owner(queue.id, queue.name), ""
        name = rule.round_robin or ""
        members = self.directory.groups.get(name)
        if members is None:
            return None, f"public group {name} does not exist in Salesforce"
        active = [m for m in members if m.active and m.id != self.leaver.sf_user_id and m.id not in self.refused]
        if not active:
            return None, f"public group {name} has no active member"
        turn = self.turns.get(name, 0)
        self.turns[name] = turn + 1
        return active[turn % len(active)], ""
