"""The `offboarding:` section of the mapping file: who gets a leaver's open records, and how leaving is done.

Why rules per object type, in order: Salesforce has no "reassign everything" call, and what an org wants differs per
object (opportunities stay with the sales line, leads go to a queue, cases to the support queue). The first rule
that can place a record wins; a rule that cannot (no manager, an empty team, an owner Salesforce refuses) hands the
record to the next; a record no rule places becomes a review item. `shared.offboarding` computes the plan from this
section, `workers/ownership_transfer.py` executes it.

Why `open` filters with built-in defaults: closed opportunities and cases, converted leads and completed tasks are
history; moving them would rewrite reports of who won what. Accounts and Contacts have no "closed" state.

Names are Salesforce API names: queues and public groups by DeveloperName, users by Username (the one user name that
is the same in every sandbox copy of the org, unlike ids).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

#: The filter each standard object gets when `open` is left out; objects not listed take every record.
DEFAULT_OPEN_FILTERS: dict[str, str] = {
    "Opportunity": "IsClosed = false",
    "Lead": "IsConverted = false",
    "Case": "IsClosed = false",
    "Task": "IsClosed = false",
}
#: `open: all` takes every record the leaver owns (e.g. closed opportunities too).
ALL_RECORDS = "all"
#: Objects whose records Salesforce never lets a queue own (no QueueSobject row can exist for them).
NEVER_QUEUE_OWNED = frozenset({"Opportunity", "Account", "Contact"})
DEFAULT_BULK_THRESHOLD = 2000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleKind(StrEnum):
    MANAGER = "manager"
    ROUND_ROBIN = "round_robin"
    QUEUE = "queue"
    USER = "user"
    FALLBACK = "fallback"


class OwnerRule(_Model):
    """One way to find a new owner; exactly one key. `manager` and `fallback` are written as plain words."""

    manager: bool | None = Field(default=None, description="the leaver's manager (Salesforce ManagerId, else the "
                                 "Entra manager through idsync's link); must be active")
    round_robin: str | None = Field(default=None, description="public group DeveloperName: its active members, "
                                    "in turn")
    queue: str | None = Field(default=None, description="queue DeveloperName; the queue must support the object")
    user: str | None = Field(default=None, description="a Username")
    fallback: bool | None = Field(default=None, description="offboarding.fallback_owner")

    @model_validator(mode="after")
    def _exactly_one(self) -> OwnerRule:
        given = [k for k in RuleKind if getattr(self, k.value) is not None]
        if len(given) != 1:
            raise ValueError("a rule is one of: manager, fallback, {round_robin: Group}, {queue: Queue}, "
                             "{user: username}")
        if self.manager is False or self.fallback is False:
            raise ValueError("write the rule as a plain word ('- manager', '- fallback'), or leave it out")
        return self

    @property
    def kind(self) -> RuleKind:
        return next(k for k in RuleKind if getattr(self, k.value) is not None)

    @property
    def name(self) -> str | None:
        """The group, queue or username the rule names (None for manager and fallback)."""
        return self.round_robin or self.queue or self.user

    def describe(self) -> str:
        """Short human form for plans and audit records: `manager`, `queue Lead_Queue`, `round robin All_Sales`."""
        kind = self.kind
        if kind is RuleKind.ROUND_ROBIN:
            return f"round robin {self.round_robin}"
        if kind in (RuleKind.QUEUE, RuleKind.USER):
            return f"{kind.value} {self.name}"
        return kind.value


def _rule_shorthand(value: Any) -> Any:
    """`- manager` is short for `- {manager: true}`; same for `fallback`."""
    if isinstance(value, str):
        word = value.strip()
        if word in (RuleKind.MANAGER, RuleKind.FALLBACK):
            return {word: True}
        raise ValueError(f"unknown rule '{value}' (use manager, fallback, {{round_robin: Group}}, {{queue: Queue}} "
                         "or {user: username})")
    return value


OwnerRuleEntry = Annotated[OwnerRule, BeforeValidator(_rule_shorthand, json_schema_input_type=str | OwnerRule)]


class ObjectOffboarding(_Model):
    """Where one object type's open records go."""

    open: str | None = Field(default=None, description="SOQL condition selecting the open records; default per "
                             "object (IsClosed = false, IsConverted = false), none for others; 'all' for every record")
    rules: list[OwnerRuleEntry] = Field(min_length=1, description="tried in order; the first that places a record "
                                        "wins")

    @field_validator("open")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if not text:
            raise ValueError("an empty condition: leave 'open' out for the default, or write 'all'")
        if text.count("'") % 2:
            raise ValueError("unbalanced quote in the condition")
        lowered = f" {text.lower()} "
        for word in (" order by ", " limit ", " from ", " select "):
            if word in lowered:
                raise ValueError(f"'{word.strip()}' does not belong in a condition: write only what follows WHERE")
        return text


class LeaveOfAbsence(_Model):
    """Members of these Entra groups (transitively) who are disabled are on leave, not leaving: frozen only, they
    keep their licence and their records."""

    groups: list[str] = Field(min_length=1, description="Entra group display names or object ids")


class Offboarding(_Model):
    fallback_owner: str | None = Field(default=None, description="Username of the owner of last resort (the "
                                       "'fallback' rule)")
    objects: dict[str, ObjectOffboarding] = Field(default_factory=dict,
                                                  description="object API name -> its open records' rules")
    leave_of_absence: LeaveOfAbsence | None = None
    reclaim_licences: bool = Field(default=False, description="on deactivation, remove permission set licence "
                                   "assignments and the permission sets idsync granted")
    bulk_threshold: int = Field(default=DEFAULT_BULK_THRESHOLD, ge=1, description="more records of one object than "
                                "this go through Bulk API 2.0 instead of sObject Collections")

    @field_validator("objects")
    @classmethod
    def _object_names(cls, value: dict[str, ObjectOffboarding]) -> dict[str, ObjectOffboarding]:
        from shared.mapping.model import FIELD_NAME

        for name in value:
            if not FIELD_NAME.match(name):
                raise ValueError(f"'{name}' is not an object API name (e.g. Opportunity, Project__c)")
        return value

    def open_filter(self, sobject: str) -> str | None:
        """The SOQL condition for `sobject`'s open records; None: every record the leaver owns."""
        spec = self.objects.get(sobject)
        written = spec.open if spec is not None else None
        if written is None:
            return DEFAULT_OPEN_FILTERS.get(sobject)
        return None if written.lower() == ALL_RECORDS else written


Problem = tuple[tuple[str | int, ...], str, str | None]


def offboarding_problems(section: Offboarding) -> list[Problem]:
    """Rules that cannot work whatever the org holds (the org's own names are checked by `mapping check --org`)."""
    problems: list[Problem] = []
    uses_fallback = False
    for sobject, spec in section.objects.items():
        for index, rule in enumerate(spec.rules):
            path = ("offboarding", "objects", sobject, "rules", index)
            if rule.kind is RuleKind.QUEUE and sobject in NEVER_QUEUE_OWNED:
                problems.append((path, f"a queue cannot own {sobject} records (Salesforce has no queue support for "
                                 f"{sobject})", "use manager, round_robin, user or fallback"))
            if rule.kind is RuleKind.FALLBACK:
                uses_fallback = True
    if uses_fallback and section.fallback_owner is None:
        problems.append((("offboarding",), "a rule says 'fallback' but no fallback_owner is set",
                         "add offboarding.fallback_owner: <Username>"))
    return problems
