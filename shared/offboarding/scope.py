"""Leavers who are still enabled in Entra: users taken out of the mapping's scope.

Why a marker: the ownership transfer re-reads Graph (events are hints) and keeps the records of a user Entra enables,
because a re-enabled user is coming back. A user who left the mapping's scope (moved out of the scoped groups, a
filter no longer matching) is enabled in Entra too, yet is a leaver: the revocation lane's deprovisioning
(`revocation.deprovision_user`, issue 7) marks them here before it deactivates, and the reactivation path clears the
mark when they are back in scope. The transfer then treats a marked, enabled user as having left.
"""

from __future__ import annotations

from typing import Any

from shared.entra_status import EntraState

PREFIX = "idsync:offboarding:left-scope"
OUT_OF_SCOPE = "out_of_scope"
#: A mark outlives any transfer's retries; a user still out of scope a month later is marked again when revoked.
TTL_S = 30 * 86_400


def mark_left_scope(redis: Any, entra_id: str) -> None:
    redis.set(f"{PREFIX}:{entra_id}", "1", ex=TTL_S)


def clear_left_scope(redis: Any, entra_id: str) -> None:
    redis.delete(f"{PREFIX}:{entra_id}")


def offboarding_state(redis: Any, entra_id: str, state: EntraState) -> EntraState:
    """What the transfer plans with: Graph's state, except an enabled user marked out of scope is a leaver."""
    if state.enabled and redis.exists(f"{PREFIX}:{entra_id}"):
        return EntraState(OUT_OF_SCOPE, state.upn)
    return state
