"""Done-when #1/#3: a user disabled in Entra is frozen and deactivated in Salesforce through the real pipeline:
sandbox Graph -> change notification -> webhook -> Redis -> revocation worker -> Salesforce."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _subscribe(stack) -> list[dict]:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings()
    return SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()


def test_disabled_user_is_frozen_then_deactivated_via_webhook(stack, wait_for):
    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.start_webhook()
    subs = _subscribe(stack)  # the sandbox validated our webhook with the handshake
    assert {s["resource"] for s in subs} == {"/users", "/groups"}

    user, sf_user = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])

    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, what="deactivated")
    assert stack.org.frozen(sf_user["Id"])
    revokes = stack.audit("revoke", user["id"])
    assert [r["outcome"] for r in revokes] == ["revoked"]
    assert [r["action"] for r in reversed(stack.audit(entra_id=user["id"]))][:3] == ["freeze", "deactivate", "revoke"]
    # The ownership-transfer follow-up runs on the sync lane after the revocation, under the same correlation id
    # (the demo mapping's rules place every open record; tests/integration/test_offboarding.py checks where).
    transfers = wait_for(lambda: [t for t in stack.audit("transfer_ownership", user["id"]) if t["outcome"] == "done"],
                         what="the transfer follow-up")
    assert transfers[0]["sf_user_id"] == sf_user["Id"]
    assert transfers[0]["correlation_id"] == revokes[0]["correlation_id"]
    assert float(transfers[0]["ts"]) >= float(revokes[0]["ts"])
    from shared.identity_links import IdentityLinks

    assert [t for t in IdentityLinks(stack.redis).pending_transfers() if t["entra_id"] == user["id"]] == []


def test_user_reenabled_in_entra_is_reactivated_on_the_sync_lane(stack, wait_for):
    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.start_webhook()
    _subscribe(stack)
    user, sf_user = stack.active_member_in_salesforce(skip=2)
    stack.tenant.disable(user["id"])
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, what="deactivated")

    stack.tenant.enable(user["id"])

    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is True, what="reactivated")
    wait_for(lambda: not stack.org.frozen(sf_user["Id"]), what="unfrozen")
    assert [r["outcome"] for r in stack.audit("activate", user["id"])] == ["done"]
    from shared.identity_links import IdentityLinks

    assert IdentityLinks(stack.redis).tombstone(user["id"]) is None  # the re-enable cleared the revocation tombstone
