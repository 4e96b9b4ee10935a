"""The one identity-event model that producers enqueue and workers consume.

Events are hints, not commands: a worker always re-reads the user from Graph before acting, so a duplicate,
late or reordered event is harmless. The event says *who* to look at and *why we looked*.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class EventKind(StrEnum):
    USER_CHANGED = "user.changed"  # any update (may be a disable; the worker finds out)
    USER_DISABLED = "user.disabled"  # delta saw accountEnabled=false
    USER_SOFT_DELETED = "user.soft_deleted"  # delta @removed reason=changed
    USER_HARD_DELETED = "user.hard_deleted"  # delta @removed reason=deleted, webhook changeType=deleted
    USER_ENABLED = "user.enabled"  # re-enabled: reactivation on the sync lane
    GROUP_CHANGED = "group.changed"
    OWNERSHIP_TRANSFER = "user.ownership_transfer"  # follow-up after a revocation
    USER_OUT_OF_SCOPE = "user.out_of_scope"  # a linked user the mapping no longer covers: a leaver, verified live
    SYNC_BACKLOG = "sync.backlog"  # users are waiting in the sync backlog: a batch task should drain it
    REQUEST_APPROVED = "request.approved"  # object_id: a Salesforce User_Provisioning_Request__c Id
    RECONCILE = "reconcile.run"  # a full reconciliation (scheduled by beat, or resuming one cut short)


class EventSource(StrEnum):
    WEBHOOK = "webhook"
    DELTA = "delta"
    REPLAY = "replay"
    WORKER = "worker"
    OPERATOR = "operator"
    SALESFORCE = "salesforce"  # the request poller


#: Kinds that can only mean "access must go": they take the revocation lane straight away.
REVOCATION_KINDS = frozenset(
    {EventKind.USER_DISABLED, EventKind.USER_SOFT_DELETED, EventKind.USER_HARD_DELETED}
)


def _now() -> datetime:
    return datetime.now(UTC)


class IdentityEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: EventKind
    source: EventSource
    tenant: str
    object_id: str  # Entra object id (user or group); a Salesforce request Id for REQUEST_APPROVED
    observed_at: datetime = Field(default_factory=_now)
    correlation_id: str = Field(default_factory=lambda: uuid.uuid4().hex)

    def follow_up(self, kind: EventKind) -> IdentityEvent:
        """A worker's next event about the same object: same tenant, observation time and correlation id (so
        tombstones compare the original observation and logs join), new event id."""
        return IdentityEvent(
            kind=kind,
            source=EventSource.WORKER,
            tenant=self.tenant,
            object_id=self.object_id,
            observed_at=self.observed_at,
            correlation_id=self.correlation_id,
        )

    def to_message(self) -> dict[str, object]:
        """JSON-safe dict for a Celery argument."""
        return self.model_dump(mode="json")

    @classmethod
    def from_message(cls, data: dict[str, object]) -> IdentityEvent:
        return cls.model_validate(data)
