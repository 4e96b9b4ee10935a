"""Done-when #3: the pipeline's durability promises, end to end."""

from __future__ import annotations

import pytest
import redis

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent

pytestmark = pytest.mark.integration


def _subscribe(stack) -> None:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings()
    SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()


def _event(stack, kind: EventKind, object_id: str) -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"],
                         object_id=object_id)


def test_revocation_is_not_delayed_by_a_10000_event_sync_backlog(stack, wait_for):
    celery = stack.celery()
    with stack.sandbox.state.lock:
        ids = [u["id"] for u in stack.sandbox.state.directory.users.values()]
    for i in range(10_000):
        publish(celery, _event(stack, EventKind.USER_CHANGED, ids[i % len(ids)]), task_name="sync.user_changed")
    assert stack.redis.llen("sync") == 10_000
    stack.start_worker("revocation")  # booted first: its start-up is not part of what is measured
    stack.start_worker("sync")
    wait_for(lambda: stack.redis.llen("sync") < 10_000, what="the sync worker to be draining the backlog")

    user, sf_user = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])
    publish(celery, _event(stack, EventKind.USER_DISABLED, user["id"]))
    left_when_done: list[int] = []

    def deactivated() -> bool:
        if stack.org.user(user["userPrincipalName"])["IsActive"] is not False:
            return False
        left_when_done.append(stack.redis.llen("sync"))
        return True

    wait_for(deactivated, what="deactivated")
    assert stack.org.frozen(sf_user["Id"])
    # The revocation finished while the sync lane still held most of its backlog: it never waited behind it (a
    # revocation queued behind the sync messages would have found the sync lane empty).
    assert left_when_done[0] > 5_000


def test_webhook_answers_503_while_redis_is_down_and_graphs_retry_then_succeeds(stack, wait_for):
    webhook = stack.start_webhook()
    _subscribe(stack)
    user, _ = stack.active_member_in_salesforce(skip=1)
    activity = stack.sandbox.state.activity

    def deliveries(status: int) -> list[dict]:
        return [d for d in activity.recent("webhook_delivery", limit=500)
                if d.get("url", "").startswith(webhook) and d.get("status") == status]

    before_503 = len(deliveries(503))
    stack.redis_server.kill()
    stack.tenant.disable(user["id"])
    wait_for(lambda: len(deliveries(503)) > before_503, timeout=30, what="a 503 from the webhook while Redis is down")
    with pytest.raises(redis.ConnectionError):
        stack.redis.ping()  # Redis really is down: the 503 is the webhook refusing what it cannot queue
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is True

    stack.redis_server.start()  # same port, AOF directory and password
    stack.start_worker("revocation")
    # Graph's retry of the same notification is now accepted and the event reaches the worker.
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, timeout=40,
             what="deactivated after Graph's retry")
    assert any(d["status"] == 202 for d in activity.recent("webhook_delivery", limit=500)
               if d.get("url", "").startswith(webhook))
    assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]


def test_delta_poller_resyncs_from_scratch_after_410(stack):
    from producers.delta_poller import DeltaPoller
    from shared.graph_client import GraphClient

    settings = stack.settings()
    poller = DeltaPoller(GraphClient(settings), stack.celery(), stack.redis, settings)
    first = poller.run_round("users")
    assert first.events > 0 and not first.resynced
    stack.admin("POST", "/_sandbox/clock", {"advance_s": 8 * 86400})  # past the 7-day delta token lifetime

    second = poller.run_round("users")

    assert second.resynced
    assert second.events >= first.events - 1  # a full enumeration again: every user is an event
    assert poller.checkpoints.get("users") not in (None, first.delta_link)


def test_a_user_deleted_while_the_delta_token_was_expired_is_still_revoked(stack, wait_for):
    from producers.delta_poller import DeltaPoller
    from shared.graph_client import GraphClient
    from shared.identity_links import IdentityLinks

    stack.start_worker("revocation")
    stack.start_worker("sync")
    settings = stack.settings()
    poller = DeltaPoller(GraphClient(settings), stack.celery(), stack.redis, settings)
    user, sf_user = stack.active_member_in_salesforce(skip=3)
    poller.run_round("users")  # the first full round: every user is reconciled and linked on the sync lane
    wait_for(lambda: IdentityLinks(stack.redis).get_link(user["id"]), what="the user linked by the sync lane")

    stack.tenant.delete(user["id"])  # soft delete ...
    stack.tenant.http.delete(f"/directory/deletedItems/{user['id']}").raise_for_status()  # ... then permanent
    stack.admin("POST", "/_sandbox/clock", {"advance_s": 8 * 86400})  # our delta token expires meanwhile
    stack._org = None  # the test's own Salesforce session expired with the jump too

    result = poller.run_round("users")

    assert result.resynced and result.vanished == 1
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, what="deactivated")
    assert stack.org.frozen(sf_user["Id"])
    assert [r["outcome"] for r in stack.audit("revoke", user["id"])] == ["revoked"]
