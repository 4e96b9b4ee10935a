from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from producers.subscriptions import SubscriptionManager, parse_graph_time
from shared.errors import GraphThrottled
from tests.producers.fakes import CLIENT_STATE, FakeGraph, permanent


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


@pytest.fixture
def manager(graph, redis_client, settings) -> SubscriptionManager:
    return SubscriptionManager(graph, redis_client, settings)


def by_resource(manager: SubscriptionManager) -> dict[str, dict]:
    return {s["resource"]: s for s in manager.status()}


def test_ensure_creates_users_and_groups_subscriptions_pointing_at_our_webhook(manager, graph):
    before = datetime.now(UTC)
    records = manager.ensure()
    assert sorted(r["resource"] for r in records) == ["/groups", "/users"]
    for sub in graph.subscriptions.values():
        assert sub["notificationUrl"] == "https://hook.test/graph/notifications"
        assert sub["lifecycleNotificationUrl"] == "https://hook.test/graph/lifecycle"
        assert sub["clientState"] == CLIENT_STATE
        assert sub["changeType"] == "updated,deleted"
        expiry = parse_graph_time(sub["expirationDateTime"])
        assert before + timedelta(minutes=4229) < expiry < before + timedelta(minutes=4231)


def test_ensure_twice_keeps_the_recorded_subscriptions(manager, graph):
    first = {r["id"] for r in manager.ensure()}
    second = {r["id"] for r in manager.ensure()}
    assert first == second
    assert [c for c in graph.calls if c[0] == "create"] == [("create", "/users"), ("create", "/groups")]


def test_ensure_recreates_a_subscription_that_graph_no_longer_has(manager, graph):
    manager.ensure()
    users = by_resource(manager)["/users"]
    del graph.subscriptions[users["id"]]
    manager.ensure()
    assert by_resource(manager)["/users"]["id"] != users["id"]
    assert by_resource(manager)["/users"]["id"] in graph.subscriptions


def test_ensure_adopts_a_live_subscription_when_redis_lost_its_record(manager, graph, redis_client):
    manager.ensure()
    redis_client.delete(manager.key)
    manager.ensure()
    assert len(graph.subscriptions) == 2
    assert {s["id"] for s in manager.status()} == set(graph.subscriptions)


def test_renew_due_renews_only_subscriptions_inside_the_renewal_window(manager, graph):
    manager.ensure()
    far = datetime.now(UTC)
    assert manager.renew_due(now=far) == 0
    later = far + timedelta(minutes=4230) - timedelta(seconds=1800)  # 30 min before expiry; window is 1 h
    assert manager.renew_due(now=later) == 2
    for entry in manager.status():
        assert parse_graph_time(entry["expiry"]) > later + timedelta(minutes=4229)
    assert len([c for c in graph.calls if c[0] == "renew"]) == 2


def test_renew_recreates_a_subscription_that_graph_answers_404_for(manager, graph):
    manager.ensure()
    old = by_resource(manager)["/users"]["id"]
    del graph.subscriptions[old]
    manager.renew_due(now=datetime.now(UTC) + timedelta(days=3))
    new = by_resource(manager)["/users"]["id"]
    assert new != old and new in graph.subscriptions


def test_renew_replaces_a_subscription_graph_refuses_to_renew(manager, graph):
    manager.ensure()
    old = by_resource(manager)["/groups"]["id"]
    graph.fail_renew[old] = permanent("expirationDateTime too far")
    manager.renew_due(now=datetime.now(UTC) + timedelta(days=3))
    assert old not in graph.subscriptions
    assert by_resource(manager)["/groups"]["id"] in graph.subscriptions


def test_a_throttled_renewal_is_left_for_the_next_tick(manager, graph):
    manager.ensure()
    old = by_resource(manager)["/users"]
    graph.fail_renew[old["id"]] = GraphThrottled("429", service="graph", status=429, retry_after=5)
    manager.renew_due(now=datetime.now(UTC) + timedelta(days=3))
    assert by_resource(manager)["/users"]["id"] == old["id"]
    assert old["id"] in graph.subscriptions


def test_reauthorization_required_reauthorizes_then_renews(manager, graph):
    manager.ensure()
    sub_id = by_resource(manager)["/users"]["id"]
    manager.handle_lifecycle(sub_id, "reauthorizationRequired")
    assert graph.calls[-2:] == [("reauthorize", sub_id), ("renew", sub_id)]


def test_reauthorization_of_a_vanished_subscription_recreates_it(manager, graph):
    manager.ensure()
    sub_id = by_resource(manager)["/users"]["id"]
    del graph.subscriptions[sub_id]
    manager.handle_lifecycle(sub_id, "reauthorizationRequired")
    assert by_resource(manager)["/users"]["id"] in graph.subscriptions


def test_lifecycle_for_a_subscription_we_do_not_own_changes_nothing(manager, graph):
    manager.ensure()
    calls = len(graph.calls)
    manager.handle_lifecycle("someone-else", "reauthorizationRequired")
    assert len(graph.calls) == calls


def test_status_lists_id_resource_and_time_left(manager):
    manager.ensure()
    entries = manager.status()
    assert [e["resource"] for e in entries] == ["/groups", "/users"]
    assert all(e["expires_in_s"] > 4200 * 60 for e in entries)


def test_run_forever_creates_subscriptions_and_stops_on_request(manager, graph):
    stop = threading.Event()
    thread = threading.Thread(target=manager.run_forever, args=(stop,), kwargs={"interval": 0.01}, daemon=True)
    thread.start()
    for _ in range(200):
        if len(graph.subscriptions) == 2:
            break
        stop.wait(0.02)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(graph.subscriptions) == 2
