"""A revocation that lands while a reactivation of the same user is in progress is not undone by it.

Real parts: the sandbox over HTTPS, a private redis-server, revocation and sync workers as `python -m ops worker`
processes. The race is made wide on purpose: Salesforce answers every call after a few seconds, and the user is
disabled again (and the revocation published) while the sync worker waits for its first Salesforce answer, i.e.
after it read the tombstone and Graph, before it activates anything.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.identity_links import IdentityLinks

pytestmark = pytest.mark.integration

#: Long enough that the revocation (one fast Graph read, then its tombstone) lands inside the sync task's window.
SALESFORCE_LATENCY_MS = 4000


def _event(stack: Any, kind: EventKind, entra_id: str) -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.DELTA, tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"],
                         object_id=entra_id)


def _sf_api_calls(stack: Any) -> int:
    state = stack.sandbox.state
    return state.org.api_usage(state.clock.time())


def _settled(stack: Any) -> bool:
    return stack.redis.llen("revocation") == 0 and stack.redis.llen("sync") == 0 and stack.redis.hlen("unacked") == 0


@pytest.mark.timeout(400)
def test_a_revocation_landing_during_a_reactivation_is_not_undone(stack, wait_for, tmp_path):
    # The demo mapping without its offboarding section: the leaver's record transfer (slow at 4 s per Salesforce
    # call) is not what this test is about, and would sit in front of the reactivation on the one sync worker.
    from shared.provisioning.mapping_store import EXAMPLE_MAPPING

    demo = EXAMPLE_MAPPING.read_text()
    start, end = demo.index("offboarding:"), demo.index("# ====")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(demo[:start] + demo[end:])
    stack.env["IDSYNC_MAPPING_FILE"] = str(mapping)
    # at 4 s per Salesforce call a batch (catalogue, state, writes) takes longer than the suite's 20 s task limit
    stack.env.update(IDSYNC_TASK_TIME_LIMIT_S="150", IDSYNC_VISIBILITY_TIMEOUT_S="600")
    stack.start_worker("revocation")
    stack.start_worker("sync")
    celery = stack.celery()
    user, sf_user = stack.active_member_in_salesforce(skip=1)

    # An earlier revocation, through the pipeline; then the user is re-enabled in Entra.
    stack.tenant.disable(user["id"])
    publish(celery, _event(stack, EventKind.USER_DISABLED, user["id"]))
    wait_for(lambda: stack.audit("transfer_ownership", user["id"]), timeout=30, what="the first revocation")
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is False and stack.org.frozen(sf_user["Id"])
    first_tombstone = IdentityLinks(stack.redis).tombstone(user["id"])
    assert first_tombstone is not None
    stack.tenant.enable(user["id"])

    # The reactivation starts and waits for Salesforce...
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": SALESFORCE_LATENCY_MS}})
    calls_before = _sf_api_calls(stack)
    publish(celery, _event(stack, EventKind.USER_ENABLED, user["id"]))
    wait_for(lambda: _sf_api_calls(stack) > calls_before, timeout=30,
             what="the sync worker's first Salesforce call (after its tombstone and Graph reads)")

    # ... while the user is disabled again and the revocation lane picks that up.
    stack.tenant.disable(user["id"])
    publish(celery, _event(stack, EventKind.USER_DISABLED, user["id"]))

    wait_for(lambda: stack.audit("sync_user", user["id"]), timeout=200, what="the reactivation's outcome")
    wait_for(lambda: len(stack.audit("revoke", user["id"])) >= 2, timeout=120, what="the second revocation")
    wait_for(lambda: _settled(stack), timeout=120, what="both lanes idle")
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 0}})

    sf_now = stack.org.user(user["userPrincipalName"])
    assert sf_now["IsActive"] is False, f"the reactivation undid the revocation: {stack.audit(entra_id=user['id'])}"
    assert stack.org.frozen(sf_user["Id"])
    tombstone = IdentityLinks(stack.redis).tombstone(user["id"])
    assert tombstone is not None and tombstone > first_tombstone  # the second revocation's tombstone survived
