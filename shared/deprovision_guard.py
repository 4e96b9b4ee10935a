"""The mass-deprovisioning guard: deactivations above a count or share of linked users wait for a person.

TODO(guard): STAND-IN. The real module (held runs, frozen-but-not-deactivated users, the live pipeline's sliding
window, `idsync approve|reject RUN_ID`, status and alerts) is built on its own branch; this file only fixes the
interface reconciliation calls, and always allows. The merge replaces it whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: One deactivation a run wants: (Entra object id, Salesforce user id, UPN).
Deprovision = tuple[str, str | None, str]


@dataclass(frozen=True)
class GuardDecision:
    held: bool
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return not self.held


class DeprovisionGuard:
    def __init__(self, redis: Any, settings: Any) -> None:
        self.redis = redis
        self.settings = settings

    def hold_run(self, run_id: str, deprovisions: list[Deprovision], linked_total: int) -> GuardDecision:
        """Called once per run, before the run publishes its deprovisions; the caller then publishes every one to
        the revocation lane, which freezes each user and deactivates only what the decision allows (held: nothing
        until `idsync approve RUN_ID`). The stand-in always allows."""
        return GuardDecision(held=False, reason=f"{len(deprovisions)} of {linked_total} linked users (no guard yet)")
