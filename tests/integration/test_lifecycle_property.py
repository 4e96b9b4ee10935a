"""Property: whatever an Entra admin does to a user, in whatever order and however fast (disable, enable, soft delete,
restore, hard delete, attribute updates), once idsync has caught up the Salesforce user is active and unfrozen when
Entra's final state is enabled, and inactive and frozen otherwise.

Through the real pipeline: sandbox Graph -> change notifications -> webhook -> Redis -> revocation and sync worker
subprocesses -> sandbox Salesforce. Each example uses a fresh user (a hard delete cannot be undone); few examples,
no deadline, and no shrinking (a shrink step would need yet another fresh user): the falsifying sequence is printed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

#: What each Entra state allows next; a hard delete ends the story.
_NEXT = {
    "enabled": ("disable", "soft_delete", "update"),
    "disabled": ("enable", "soft_delete", "update"),
    "deleted": ("restore", "hard_delete"),
}


@st.composite
def lifecycles(draw: st.DrawFn) -> list[tuple[str, float]]:
    """A valid sequence of admin actions, each followed by a pause of 0-0.4 s (0: the next action races the first)."""
    state, steps = "enabled", []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        action = draw(st.sampled_from(_NEXT[state]))
        steps.append((action, draw(st.sampled_from((0.0, 0.05, 0.4)))))
        if action == "hard_delete":
            break
        state = {"disable": "disabled", "enable": "enabled", "soft_delete": "deleted", "update": state}.get(
            action, state)
        if action == "restore":
            state = steps_state(steps)
    return steps


def steps_state(steps: list[tuple[str, float]]) -> str:
    """Entra's state after `steps`: a restore brings back the account as it was (enabled or disabled)."""
    enabled, deleted = True, False
    for action, _ in steps:
        if action == "disable":
            enabled = False
        elif action == "enable":
            enabled = True
        elif action == "soft_delete":
            deleted = True
        elif action == "restore":
            deleted = False
        elif action == "hard_delete":
            return "hard_deleted"
    return "deleted" if deleted else ("enabled" if enabled else "disabled")


def _quiet(stack: Any) -> bool:
    r = stack.redis
    return r.llen("revocation") == 0 and r.llen("sync") == 0 and r.hlen("unacked") == 0


def _fresh(stack: Any, used: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An active member with an active, unfrozen Salesforce user that no earlier example touched."""
    skip = 0
    while True:
        user, sf_user = stack.active_member_in_salesforce(skip=skip)
        if user["id"] not in used:
            return user, sf_user
        skip += 1


def _subscribe(stack: Any) -> None:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    s = stack.settings()
    SubscriptionManager(GraphClient(s), stack.redis, s).ensure()


def test_salesforce_ends_in_entra_s_final_state_after_any_interleaving(stack, wait_for) -> None:
    stack.start_worker("revocation", concurrency=2)
    stack.start_worker("sync", concurrency=2)
    stack.start_webhook()
    _subscribe(stack)
    used: list[str] = []

    @settings(max_examples=8, deadline=None, phases=(Phase.explicit, Phase.generate), derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(steps=lifecycles())
    def run(steps: list[tuple[str, float]]) -> None:
        user, sf_user = _fresh(stack, used)
        used.append(user["id"])
        tenant, uid = stack.tenant, user["id"]
        for n, (action, pause) in enumerate(steps):
            if action == "disable":
                tenant.disable(uid)
            elif action == "enable":
                tenant.enable(uid)
            elif action == "update":
                tenant.update(uid, {"jobTitle": f"Title {n}"})
            elif action == "soft_delete":
                tenant.delete(uid)
            elif action == "restore":
                tenant.restore(uid)
            else:
                tenant.purge(uid)
            time.sleep(pause)
        final = steps_state(steps)
        want_active = final == "enabled"

        def settled() -> bool:
            if not _quiet(stack):
                return False
            found = stack.org.user(user["userPrincipalName"])
            return bool(found and found["IsActive"] is want_active and stack.org.frozen(sf_user["Id"]) is not
                        want_active)

        wait_for(settled, timeout=45, what=f"Salesforce to match Entra ({final}) after {steps}")
        time.sleep(1.5)  # and it stays so: nothing late undoes it
        assert _quiet(stack)
        found = stack.org.user(user["userPrincipalName"])
        assert found is not None and found["IsActive"] is want_active, steps
        assert stack.org.frozen(sf_user["Id"]) is not want_active, steps

    run()
    assert len(used) >= 5  # the examples really ran
