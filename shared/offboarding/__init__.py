"""Leavers in depth: who gets a leaver's open records, deactivation blockers, leave of absence, licence reclaim.

`offboarding_plan(...)` (plan.py) is the pure decision, shown by `idsync offboard --dry-run` and executed by
`workers/ownership_transfer.py` through `reader.py` (inputs from Salesforce, Graph and Redis) and `executor.py`
(sObject Collections or Bulk API 2.0, retries, fall-through, audit, review items). docs/offboarding.md is the guide.
"""

from shared.offboarding.plan import (
    Attempt,
    HeldLicence,
    Leaver,
    OffboardingMode,
    OffboardingPlan,
    OpenRecord,
    Owner,
    OwnerDirectory,
    Queue,
    RecordMove,
    Unplaced,
    offboarding_plan,
)

__all__ = [
    "Attempt",
    "HeldLicence",
    "Leaver",
    "OffboardingMode",
    "OffboardingPlan",
    "OpenRecord",
    "Owner",
    "OwnerDirectory",
    "Queue",
    "RecordMove",
    "Unplaced",
    "offboarding_plan",
]
