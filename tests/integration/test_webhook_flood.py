"""Issue 6 #6: a flood of notifications cannot bury a real leaver.

The flood is the worst the webhook can be sent by someone holding the clientState and a real subscription id:
3,000 "updated" items naming a handful of users, as many small POSTs from several clients at once. Before the fix
every POST queued one revocation task per user named, so a leaver disabled mid-flood waited behind about 1,500
Graph reads. Now a user with a task already waiting gets no second one, so the revocation lane never holds more than
one task per distinct user (plus the leaver's), and the leaver is next in line within a few tasks.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

FLOOD_ITEMS = 3000
FLOOD_USERS = 5
ITEMS_PER_POST = 10  # well under the cap: the flood gets through the front door, only collapsing can stop it
CLIENTS = 6
#: Real Graph answers a GET /users/{id} in tens of milliseconds; the sandbox would answer far faster.
GRAPH_LATENCY_MS = 30


def _notification(user_id: str, subscription_id: str, tenant: str, client_state: str) -> dict[str, Any]:
    return {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "clientState": client_state,
        "changeType": "updated",
        "resource": f"Users/{user_id}",
        "tenantId": tenant,
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user_id}", "id": user_id},
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_real_leaver_behind_a_3000_item_flood_is_still_revoked_promptly(stack, wait_for, capsys):
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    stack.start_worker("revocation")
    url = stack.start_webhook()
    settings = stack.settings()
    subscriptions = SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()
    users_sub = next(s["id"] for s in subscriptions if s["resource"] == "/users")
    tenant, client_state = settings.graph_tenant_id, settings.webhook_client_state.get_secret_value()
    assert tenant

    leaver, sf_leaver = stack.active_member_in_salesforce(skip=4)
    with stack.sandbox.state.lock:
        flooded = [u["id"] for u in stack.sandbox.state.directory.users.values()
                   if u.get("accountEnabled") and u["id"] != leaver["id"]][:FLOOD_USERS]
    assert len(flooded) == FLOOD_USERS
    items = [_notification(flooded[i % FLOOD_USERS], users_sub, tenant, client_state) for i in range(FLOOD_ITEMS)]
    posts = [items[i:i + ITEMS_PER_POST] for i in range(0, FLOOD_ITEMS, ITEMS_PER_POST)]

    depths: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            depths.append(int(stack.redis.llen("revocation")))
            time.sleep(0.005)

    stack.sandbox.state.faults.patch({"graph": {"latency_ms": GRAPH_LATENCY_MS}})
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as http:
            def send(batch: list[dict[str, Any]]) -> int:
                return http.post("/graph/notifications", json={"value": batch}).status_code

            with ThreadPoolExecutor(CLIENTS) as pool:
                first_half = list(pool.map(send, posts[: len(posts) // 2]))
                disabled_at = time.monotonic()
                stack.tenant.disable(leaver["id"])  # the sandbox notifies the webhook, like Graph would
                second_half = list(pool.map(send, posts[len(posts) // 2:]))
        flood_done = time.monotonic()
        assert set(first_half + second_half) == {202}

        wait_for(lambda: stack.org.user(leaver["userPrincipalName"])["IsActive"] is False, timeout=90,
                 what="the leaver deactivated in Salesforce")
        revoked_after = time.monotonic() - disabled_at
    finally:
        sampling.set()
        sampler.join(timeout=5)
        stack.sandbox.state.faults.patch({"graph": {"latency_ms": 0}})

    assert stack.org.frozen(sf_leaver["Id"])
    assert depths, "the queue was never sampled"
    # The lane never held more than one waiting task per flooded user, plus the leaver's.
    assert max(depths) <= FLOOD_USERS + 1, f"revocation lane reached {max(depths)} waiting tasks"
    metrics = httpx.get(f"http://127.0.0.1:{stack.env['IDSYNC_WEBHOOK_METRICS_PORT']}/metrics", timeout=5).text
    collapsed = _metric(metrics, "idsync_webhook_events_collapsed_total")
    enqueued = _metric(metrics, 'idsync_webhook_events_enqueued_total{lane="revocation"}')
    assert collapsed > 0 and enqueued + collapsed >= len(posts) * FLOOD_USERS
    with capsys.disabled():  # measured, not asserted: wall-clock margins fail on a loaded machine
        print(f"\nflood: {len(posts)} POSTs in {flood_done - disabled_at:.1f}s after the disable; leaver revoked "
              f"{revoked_after:.2f}s after the disable; lane depth max {max(depths)}; {enqueued:.0f} revocation "
              f"tasks queued, {collapsed:.0f} collapsed")
