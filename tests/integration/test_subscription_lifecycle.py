"""Graph subscriptions kept alive end to end against the sandbox: the real `idsync beat` renews them before they
expire, the real webhook answers `reauthorizationRequired` (reauthorize + renew) and `subscriptionRemoved` (create a
new one), and a leaver is still revoked through change notifications afterwards.

The sandbox's clock is advanced through its control API (POST /_sandbox/clock) so expiry and lifecycle timing pass
without waiting; its removal hook (POST /_sandbox/graph/subscriptions/{id}/remove) stands in for Graph removing a
subscription on its own.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DAY_S = 86_400


def _manager(stack: Any, **overrides: Any) -> Any:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings(**overrides)
    return SubscriptionManager(GraphClient(settings), stack.redis, settings)


def _graph_expiry(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _sandbox_subscription(stack: Any, sub_id: str) -> dict[str, Any] | None:
    """The subscription as the sandbox (Graph) has it now, or None if Graph no longer knows it."""
    with stack.sandbox.state.lock:
        sub = stack.sandbox.state.notifier.store.get(sub_id)
        return None if sub is None else sub.to_json(include_client_state=False)


def _known_to_graph(stack: Any, sub_id: str) -> dict[str, Any]:
    sub = _sandbox_subscription(stack, sub_id)
    assert sub is not None, f"Graph does not know subscription {sub_id}"
    return sub


def _recorded(stack: Any) -> dict[str, dict[str, Any]]:
    """What idsync recorded in Redis (resource -> {id, expiry}), as every replica and `idsync status` read it."""
    from producers.subscriptions import subscription_status

    return {r["resource"]: r for r in subscription_status(stack.redis, stack.settings())}


def _json_log(stack: Any, name: str, event: str) -> list[dict[str, Any]]:
    records = []
    for line in stack.log(name).splitlines():
        if line.startswith(b"{"):
            record = json.loads(line)
            if record.get("event") == event:
                records.append(record)
    return records


def _leaver_is_revoked_through_the_webhook(stack: Any, wait_for: Any, skip: int) -> None:
    """No poller runs in these tests: only a change notification can bring the leaver to the revocation worker."""
    stack._tenant = None  # a new Graph token for the test's own admin client after clock jumps
    user, sf_user = stack.active_member_in_salesforce(skip=skip)
    stack.tenant.disable(user["id"])
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, timeout=40,
             what="the leaver deactivated")
    assert stack.org.frozen(sf_user["Id"])
    assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]


def test_beat_renews_subscriptions_before_they_expire_and_notifications_keep_coming(stack, wait_for):
    stack.start_worker("revocation")
    stack.start_webhook()
    short = _manager(stack, subscription_lifetime_min=10).ensure()  # 10 minutes left
    ids = {r["resource"]: r["id"] for r in short}
    first_expiry = {res: _graph_expiry(_known_to_graph(stack, sub_id)["expirationDateTime"])
                    for res, sub_id in ids.items()}
    assert all(expiry < time.time() + 11 * 60 for expiry in first_expiry.values())

    stack.start("beat", "beat", IDSYNC_SUBSCRIPTION_RENEW_BEFORE_S="3600")  # renews what expires within an hour

    def renewed() -> bool:
        subs = {res: _sandbox_subscription(stack, sub_id) for res, sub_id in ids.items()}
        return all(s is not None and _graph_expiry(s["expirationDateTime"]) > time.time() + DAY_S
                   for s in subs.values())

    assert wait_for(renewed, timeout=60, interval=0.2, what="both subscriptions renewed by beat") is True
    assert {r["resource"]: r["id"] for r in _recorded(stack).values()} == ids, "renewed in place, not recreated"
    assert all(r["expires_in_s"] > DAY_S for r in _recorded(stack).values())

    stack.admin("POST", "/_sandbox/clock", {"advance_s": 11 * 60})  # past the original expiry
    time.sleep(0.5)  # a few sweeps of the sandbox's expiry loop (every 0.1 s)
    assert all(_sandbox_subscription(stack, sub_id) is not None for sub_id in ids.values())
    _leaver_is_revoked_through_the_webhook(stack, wait_for, skip=0)


def test_reauthorization_required_is_answered_by_reauthorizing_and_renewing(stack, wait_for):
    stack.start_worker("revocation")
    stack.start_webhook()
    subs = _manager(stack, subscription_lifetime_min=120).ensure()
    ids = {r["resource"]: r["id"] for r in subs}
    users_id = ids["/users"]
    activity = stack.sandbox.state.activity

    def reauthorized(sub_id: str) -> list[dict[str, Any]]:
        return [a for a in activity.recent("subscription_reauthorized", limit=500) if a["subscription_id"] == sub_id]

    assert reauthorized(users_id) == []

    # Graph sends reauthorizationRequired once less than an hour of the subscription's life is left.
    stack.admin("POST", "/_sandbox/clock", {"advance_s": 61 * 60})

    wait_for(lambda: reauthorized(users_id), timeout=30, what="POST /subscriptions/{id}/reauthorize from the webhook")
    wait_for(lambda: _recorded(stack)["/users"]["expires_in_s"] > DAY_S, timeout=30,
             what="the reauthorized subscription renewed for days")
    assert _recorded(stack)["/users"]["id"] == users_id, "kept, not recreated"
    assert _graph_expiry(_known_to_graph(stack, users_id)["expirationDateTime"]) > time.time() + DAY_S
    # one summary line per request, listing (subscription id, lifecycle event) pairs
    lifecycle = [tuple(pair) for r in _json_log(stack, "webhook", "webhook_lifecycle")
                 for pair in r.get("lifecycle_events", [])]
    assert {event for sub_id, event in lifecycle if sub_id == users_id} == {"reauthorizationRequired"}
    renewals = [r for r in _json_log(stack, "webhook", "subscription_renewed") if r["subscription_id"] == users_id]
    assert renewals and all(r["reauthorized"] is True for r in renewals)
    _leaver_is_revoked_through_the_webhook(stack, wait_for, skip=1)


def test_subscription_removed_is_answered_by_creating_a_new_subscription(stack, wait_for):
    stack.start_worker("revocation")
    webhook = stack.start_webhook()
    ids = {r["resource"]: r["id"] for r in _manager(stack).ensure()}
    removed = ids["/users"]

    stack.admin("POST", f"/_sandbox/graph/subscriptions/{removed}/remove")

    replacement = wait_for(lambda: (r := _recorded(stack)["/users"]["id"]) != removed and r, timeout=30,
                           what="a new /users subscription recorded by the webhook")
    assert _sandbox_subscription(stack, removed) is None
    created = _sandbox_subscription(stack, replacement)
    assert created is not None
    assert created["resource"] == "/users"
    assert created["notificationUrl"] == f"{webhook}/graph/notifications"
    assert created["lifecycleNotificationUrl"] == f"{webhook}/graph/lifecycle"
    assert _recorded(stack)["/groups"]["id"] == ids["/groups"], "the other subscription is left alone"
    lifecycle = [tuple(pair) for r in _json_log(stack, "webhook", "webhook_lifecycle")
                 for pair in r.get("lifecycle_events", [])]
    assert [event for sub_id, event in lifecycle if sub_id == removed] == ["subscriptionRemoved"]
    _leaver_is_revoked_through_the_webhook(stack, wait_for, skip=2)
