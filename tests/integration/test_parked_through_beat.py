"""A message parked for a long Retry-After comes back through `idsync beat` and finishes: real worker and beat
processes, the sandbox's Graph answering 429 with a Retry-After longer than the parking threshold."""

from __future__ import annotations

import pytest

from shared import parking
from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent

pytestmark = pytest.mark.integration

#: Longer than the stack's IDSYNC_PARK_THRESHOLD_S (5 s): the worker must park, not count down.
RETRY_AFTER_S = 8


def test_a_parked_revocation_comes_back_through_beat_and_completes(stack, wait_for):
    stack.start_worker("revocation")
    user, sf_user = stack.active_member_in_salesforce(skip=3)
    stack.tenant.disable(user["id"])
    stack.admin("PATCH", "/_sandbox/faults", {"graph": {"throttle_rate": 1.0, "throttle_retry_after_s": RETRY_AFTER_S}})

    event = IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"])
    publish(stack.celery(), event)
    wait_for(lambda: parking.count_by_lane(stack.redis)["revocation"] == 1, timeout=30, what="the parked message")
    assert stack.redis.llen("revocation") == 0 and stack.audit("revoke", user["id"]) == []
    [parked] = [parking.ParkedMessage.model_validate_json(m) for m in stack.redis.zrange(parking.PARKED_KEY, 0, -1)]
    assert parked.task == "revocation.revoke_user" and parked.retries == 1

    stack.admin("PATCH", "/_sandbox/faults", {"graph": {"throttle_rate": 0.0}})
    stack.start("beat", "beat")

    [revoke] = wait_for(lambda: stack.audit("revoke", user["id"]), timeout=60, what="the revocation after beat")
    assert revoke["outcome"] == "revoked" and revoke["correlation_id"] == event.correlation_id
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is False and stack.org.frozen(sf_user["Id"])
    assert parking.count(stack.redis) == 0 and parking.count_by_lane(stack.redis)["revocation"] == 0
    assert b"parked_message_republished" in stack.log("beat")
