"""The one audit event schema: every action idsync takes or declines on an identity, as one record.

Why one flat record: an auditor asks "who lost access, when, why, and how do you know"; every sink (files, SQL,
Salesforce, a SIEM) stores the same fields, and the report and the verifier read them back the same way. The record
is built once, by `shared.audit.audit()` in the process that acted, and never changed afterwards: the single writer
only wraps it in a chain entry (`shared.audit_chain`).

Field meanings:
- `time`: when the action finished (epoch seconds, UTC); `observed_at`: when a producer first saw the Entra change
  (webhook receipt or delta round); `latency_ms` = time - observed_at, the Entra change -> Salesforce effect figure.
- `actor`: "idsync" for the service, "operator:<login>" for a CLI action.
- subject: `entra_id`, `sf_user_id`, `upn`.
- `before` / `after`: the relevant state either side of the action (e.g. {"IsActive": true} -> {"IsActive": false}).
- `rule`: what made idsync act (e.g. "entra:disabled" for an account disabled in Entra, a mapping rule id).
- `source_event`: the identity event id that triggered the action; `correlation_id` joins every step of one change.
"""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Action(StrEnum):
    """The actions idsync audits. Free strings are accepted too (an emitter from a newer version must never fail on
    a name this version does not know), but every emitter in this code base uses one of these."""

    PROVISION = "provision"
    FIELD_UPDATE = "field_update"
    ENTITLEMENT_ADD = "entitlement_add"
    ENTITLEMENT_REMOVE = "entitlement_remove"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    DEACTIVATE = "deactivate"
    ACTIVATE = "activate"
    REACTIVATE = "reactivate"
    REVOKE = "revoke"  # the summary record of one revocation, with its latency
    SYNC_USER = "sync_user"
    LINK = "link"  # an Entra user linked to an existing Salesforce user (matching) or to the one just created
    RELINK = "relink"  # a stale stored link dropped and the user found again
    RECORD_TRANSFER = "record_transfer"
    TRANSFER_OWNERSHIP = "transfer_ownership"
    GROUP_CHANGED = "group_changed"
    REVIEW_OPENED = "review_opened"
    REVIEW_RESOLVED = "review_resolved"
    DLQ_REPLAY = "dlq_replay"
    GUARD_HELD = "guard_held"
    GUARD_APPROVED = "guard_approved"
    GUARD_REJECTED = "guard_rejected"
    REVERSE_FLOW_CREATE = "reverse_flow_create"
    MAPPING_RELOADED = "mapping_reloaded"


ACTOR_IDSYNC = "idsync"


def operator_actor() -> str:
    """The actor of a CLI action: the operator's login on this machine (what an auditor can trace to a person)."""
    import getpass

    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "operator:unknown"


def canonical_json(value: Any) -> str:
    """The one byte-exact JSON form that hashes are computed over: sorted keys, no spaces, UTF-8 as is.

    Python's float repr round-trips, so parsing a stored line and serialising it again gives the same text; that is
    what lets any sink's copy be re-hashed by `idsync audit verify`.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class AuditEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    time: float = Field(default_factory=time.time)
    action: str
    outcome: str
    actor: str = ACTOR_IDSYNC
    entra_id: str | None = None
    sf_user_id: str | None = None
    upn: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    rule: str | None = None
    source_event: str | None = None
    correlation_id: str | None = None
    observed_at: float | None = None
    latency_ms: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def build(cls, action: str, outcome: str, *, observed_at: float | None = None, **fields: Any) -> AuditEvent:
        """An event stamped now, with the latency computed when the observation time is known."""
        now = time.time()
        latency = None if observed_at is None else round(max(0.0, now - observed_at) * 1000, 3)
        return cls(action=str(action), outcome=outcome, time=now, observed_at=observed_at, latency_ms=latency,
                   **fields)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> AuditEvent:
        return cls.model_validate_json(text)
