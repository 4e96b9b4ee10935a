from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import redis
import uvicorn
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from ops.embedded_redis import free_port
from producers.subscriptions import SubscriptionManager
from producers.webhook import MAX_ITEMS_PER_REQUEST, MAX_LOGGED_CHARS, bounded, create_app, serve_metrics
from tests.producers.fakes import CLIENT_STATE, TENANT, BreakingSender, FakeGraph, queued

USER_ID = "7b1fa6f8-1111-4a2b-9c3d-0123456789ab"
GROUP_ID = "2e58aaaa-2222-4a2b-9c3d-0123456789ab"


def notification(resource: str = f"Users/{USER_ID}", change: str = "updated", state: str = CLIENT_STATE,
                 tenant: str = TENANT) -> dict:
    object_id = resource.split("/", 1)[1]
    return {
        "id": "lsgTZMr9KwAAA",
        "subscriptionId": "sub-1",
        "subscriptionExpirationDateTime": "2030-03-19T22:11:09.952Z",
        "clientState": state,
        "changeType": change,
        "resource": resource,
        "tenantId": tenant,
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": resource, "id": object_id},
    }


JSON = {"content-type": "application/json"}


def body(*items: dict) -> dict:
    return {"value": list(items)}


def record_subscription(redis_client, sub_id: str = "sub-1", resource: str = "/users") -> None:
    """What the subscription manager writes once Graph accepted a subscription."""
    redis_client.hset(f"idsync:subscriptions:{TENANT}", resource, json.dumps(
        {"id": sub_id, "resource": resource, "expiry": "2030-03-19T22:11:09+00:00"}))


@pytest.fixture(autouse=True)
def subscribed(redis_client) -> None:
    record_subscription(redis_client)


@pytest.fixture
def client(settings, celery_app, redis_client):
    with TestClient(create_app(settings, celery_app, redis_client)) as c:
        yield c


@pytest.fixture
def roomy_client(settings, celery_app, redis_client):
    """A receiver taking bodies of real-batch size (the default `client` has a 4 KB limit)."""
    roomy = settings.model_copy(update={"webhook_max_body_bytes": 5_000_000})
    with TestClient(create_app(roomy, celery_app, redis_client)) as c:
        yield c


def exposition(client: TestClient) -> str:
    app = client.app
    assert isinstance(app, Starlette)
    return generate_latest(app.state.metrics.registry).decode()


def metric(client: TestClient, name: str) -> float:
    for line in exposition(client).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_handshake_echoes_the_url_decoded_token_as_plain_text_with_nosniff(client):
    response = client.post("/graph/notifications?validationToken=Validation%3A%20Testing%20client%20%3Cb%3E%2B1")
    assert response.status_code == 200
    assert response.text == "Validation: Testing client <b>+1"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert metric(client, 'idsync_webhook_handshakes_total{endpoint="notifications"}') == 1


def test_handshake_on_the_lifecycle_url_works_the_same_way(client):
    response = client.post("/graph/lifecycle", params={"validationToken": "a b&c"})
    assert (response.status_code, response.text) == (200, "a b&c")


def test_handshake_refuses_an_overlong_token(client):
    response = client.post("/graph/notifications", params={"validationToken": "x" * 1025})
    assert response.status_code == 400
    assert "x" * 50 not in response.text


def test_a_user_update_is_in_the_revocation_queue_before_the_202(client, redis_client):
    response = client.post("/graph/notifications", json=body(notification()))
    assert response.status_code == 202
    messages = queued(redis_client, "revocation")
    assert len(messages) == 1
    event = messages[0]["event"]
    assert (event["kind"], event["object_id"], event["source"], event["tenant"]) == (
        "user.changed", USER_ID, "webhook", TENANT)
    assert messages[0]["headers"]["idsync_correlation_id"] == event["correlation_id"]
    assert messages[0]["headers"]["task"] == "revocation.check_user"
    assert redis_client.llen("sync") == 0


def test_deleted_user_and_changed_group_take_their_lanes(client, redis_client):
    response = client.post("/graph/notifications", json=body(
        notification(change="deleted"), notification(resource=f"Groups/{GROUP_ID}")))
    assert response.status_code == 202
    assert [m["event"]["kind"] for m in queued(redis_client, "revocation")] == ["user.hard_deleted"]
    assert [m["event"]["object_id"] for m in queued(redis_client, "sync")] == [GROUP_ID]


def test_repeated_updates_for_one_user_in_one_batch_become_one_event(client, redis_client):
    response = client.post("/graph/notifications", json=body(notification(), notification(), notification()))
    assert response.status_code == 202
    assert redis_client.llen("revocation") == 1


def test_forged_client_state_enqueues_nothing_and_still_answers_202(client, redis_client):
    response = client.post("/graph/notifications", json=body(notification(state="guess")))
    assert response.status_code == 202
    assert redis_client.llen("revocation") == 0
    assert metric(client, "idsync_webhook_client_state_mismatch_total") == 1


def test_only_the_forged_items_of_a_mixed_batch_are_dropped(client, redis_client):
    response = client.post("/graph/notifications", json=body(
        notification(state="guess"), notification(resource=f"Groups/{GROUP_ID}")))
    assert response.status_code == 202
    assert redis_client.llen("revocation") == 0
    assert redis_client.llen("sync") == 1


def test_notifications_from_another_tenant_are_dropped(client, redis_client):
    response = client.post("/graph/notifications", json=body(notification(tenant="other-tenant")))
    assert response.status_code == 202
    assert redis_client.llen("revocation") == 0
    assert metric(client, 'idsync_webhook_rejected_total{reason="foreign_tenant"}') == 1


def test_unknown_resource_types_are_rejected_without_a_crash(client, redis_client):
    response = client.post("/graph/notifications", json=body(notification(resource="Me/Messages/abc")))
    assert response.status_code == 202
    assert redis_client.llen("revocation") + redis_client.llen("sync") == 0
    assert metric(client, 'idsync_webhook_rejected_total{reason="unknown_resource"}') == 1


def test_malformed_json_is_refused_with_a_message(client, redis_client):
    response = client.post("/graph/notifications", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": "body is not valid JSON"}
    assert metric(client, 'idsync_webhook_rejected_total{reason="not_json"}') == 1


def test_a_notification_missing_required_fields_is_refused_naming_the_field(client, redis_client):
    item = notification()
    del item["subscriptionId"]
    response = client.post("/graph/notifications", json=body(item))
    assert response.status_code == 400
    assert "subscriptionId" in response.json()["error"]
    assert CLIENT_STATE not in response.text
    assert redis_client.llen("revocation") == 0


def test_an_oversized_body_is_refused_before_parsing(client, redis_client):
    big = body(*[notification() for _ in range(40)])  # well over the 4096-byte limit of the test settings
    response = client.post("/graph/notifications", content=json.dumps(big).encode(), headers=JSON)
    assert response.status_code == 413
    assert "4096" in response.json()["error"]
    assert redis_client.llen("revocation") == 0


def test_an_oversized_chunked_body_without_content_length_is_refused(client):
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/graph/notifications", content=chunks(), headers=JSON)
    assert response.status_code == 413


def test_503_while_redis_is_down_then_graphs_retry_is_accepted_after_restart(settings, celery_app, redis_server):
    app = create_app(settings, celery_app, redis.Redis.from_url(redis_server.url), publish_timeout_s=2.5)
    payload = body(notification(change="deleted"))
    with TestClient(app) as client:
        redis_server.kill()
        down = client.post("/graph/notifications", json=payload)
        assert down.status_code == 503
        assert client.get("/healthz").status_code == 503
        redis_server.start()
        record_subscription(redis.Redis.from_url(redis_server.url))  # in case the kill lost the AOF tail
        retry = client.post("/graph/notifications", json=payload)
        assert retry.status_code == 202
        assert metric(client, "idsync_webhook_unavailable_total") == 1
    check = redis.Redis.from_url(redis_server.url)
    assert [m["event"]["kind"] for m in queued(check, "revocation")] == ["user.hard_deleted"]


def test_a_batch_is_not_acknowledged_when_only_part_of_it_reached_the_broker(settings, celery_app, redis_client):
    app = create_app(settings, BreakingSender(celery_app, ok=1), redis_client)
    with TestClient(app) as client:
        response = client.post("/graph/notifications", json=body(
            notification(), notification(resource=f"Groups/{GROUP_ID}")))
    assert response.status_code == 503


def test_a_publish_slower_than_the_deadline_answers_503(settings, redis_client):
    release = threading.Event()

    class StuckSender:
        def send_task(self, *args, **kwargs):
            release.wait(5)

    app = create_app(settings, StuckSender(), redis_client, publish_timeout_s=0.2)
    try:
        with TestClient(app) as client:
            assert client.post("/graph/notifications", json=body(notification())).status_code == 503
    finally:
        release.set()


def test_lifecycle_reauthorization_required_reauthorizes_after_the_202(settings, celery_app, redis_client):
    graph = FakeGraph()
    manager = SubscriptionManager(graph, redis_client, settings)
    users_sub = manager.ensure()[0]
    lifecycle = {"subscriptionId": users_sub["id"], "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                 "tenantId": TENANT, "clientState": CLIENT_STATE, "lifecycleEvent": "reauthorizationRequired"}
    with TestClient(create_app(settings, celery_app, redis_client, manager)) as client:
        response = client.post("/graph/lifecycle", json={"value": [lifecycle]})
    assert response.status_code == 202
    assert ("reauthorize", users_sub["id"]) in graph.calls
    assert ("renew", users_sub["id"]) in graph.calls


def test_lifecycle_with_a_forged_client_state_is_ignored(settings, celery_app, redis_client):
    graph = FakeGraph()
    manager = SubscriptionManager(graph, redis_client, settings)
    sub = manager.ensure()[0]
    lifecycle = {"subscriptionId": sub["id"], "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                 "tenantId": TENANT, "clientState": "guess", "lifecycleEvent": "reauthorizationRequired"}
    with TestClient(create_app(settings, celery_app, redis_client, manager)) as client:
        assert client.post("/graph/lifecycle", json={"value": [lifecycle]}).status_code == 202
    assert not [c for c in graph.calls if c[0] in ("reauthorize", "renew")]


def test_a_forged_or_real_client_state_is_never_logged(client):
    with capture_logs() as logs:
        client.post("/graph/notifications", json=body(notification(state="forged-secret-value"), notification()))
    [summary] = [entry for entry in logs if entry["event"] == "webhook_notifications"]
    assert summary["dropped"] == {"client_state": 1}
    assert "forged-secret-value" not in repr(logs)
    assert CLIENT_STATE not in repr(logs)


def test_healthz_reports_redis_up(client):
    assert client.get("/healthz").json() == {"status": "ok", "redis": "up"}


def test_the_client_state_never_appears_in_metrics_or_error_bodies(client):
    client.post("/graph/notifications", json=body(notification(state="forged-secret-value")))
    assert "forged-secret-value" not in exposition(client)
    assert CLIENT_STATE not in exposition(client)


def test_a_real_uvicorn_server_accepts_a_notification_and_enqueues_it(settings, celery_app, redis_client):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, celery_app, redis_client), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        assert server.started
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            handshake = http.post("/graph/notifications", params={"validationToken": "tok en%"})
            response = http.post("/graph/notifications", json=body(notification(change="deleted")))
        assert (handshake.status_code, handshake.text) == (200, "tok en%")
        assert response.status_code == 202
        assert redis_client.llen("revocation") == 1
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def test_with_the_production_celery_app_a_redis_outage_is_a_503_and_the_retry_lands_on_its_lane(
    settings, redis_server
):
    from workers.app import create_app as create_celery_app

    celery = create_celery_app(settings.model_copy(update={"redis_url": redis_server.url}))
    payload = body(notification(change="deleted"), notification(resource=f"Groups/{GROUP_ID}"))
    try:
        with TestClient(create_app(settings, celery, redis.Redis.from_url(redis_server.url))) as client:
            redis_server.kill()
            assert client.post("/graph/notifications", json=payload).status_code == 503
            redis_server.start()
            record_subscription(redis.Redis.from_url(redis_server.url))  # in case the kill lost the AOF tail
            assert client.post("/graph/notifications", json=payload).status_code == 202
    finally:
        celery.close()
    check = redis.Redis.from_url(redis_server.url)
    assert [m["event"]["kind"] for m in queued(check, "revocation")] == ["user.hard_deleted"]
    assert [m["event"]["kind"] for m in queued(check, "sync")] == ["group.changed"]


# --- flooding: unknown subscriptions, item cap, collapsing, hostile bodies


def test_items_naming_a_subscription_we_did_not_create_are_dropped_counted_and_logged_once(
    roomy_client, redis_client
):
    client = roomy_client
    forged = [dict(notification(), subscriptionId=f"made-up-{i}" + "x" * 500) for i in range(50)]
    with capture_logs() as logs:
        response = client.post("/graph/notifications", json=body(*forged, notification(change="deleted")))
    assert response.status_code == 202
    assert [m["event"]["kind"] for m in queued(redis_client, "revocation")] == ["user.hard_deleted"]
    assert metric(client, 'idsync_webhook_rejected_total{reason="unknown_subscription"}') == 50
    [summary] = [e for e in logs if e["event"].startswith("webhook_")]  # one line for the whole request
    assert summary["event"] == "webhook_notifications" and summary["dropped"] == {"unknown_subscription": 50}
    assert summary["enqueued"] == {"revocation": 1}
    example = summary["examples"]["unknown_subscription"]
    assert example.startswith("made-up-0") and len(example) <= MAX_LOGGED_CHARS + 3


def test_a_request_with_more_items_than_the_cap_is_refused_whole(settings, celery_app, redis_client):
    roomy = settings.model_copy(update={"webhook_max_body_bytes": 5_000_000})
    with TestClient(create_app(roomy, celery_app, redis_client)) as client:
        too_many = client.post("/graph/notifications", json=body(*[notification()] * (MAX_ITEMS_PER_REQUEST + 1)))
        assert too_many.status_code == 413
        assert str(MAX_ITEMS_PER_REQUEST) in too_many.json()["error"]
        assert redis_client.llen("revocation") == 0
        assert client.post("/graph/notifications",
                           json=body(*[notification()] * MAX_ITEMS_PER_REQUEST)).status_code == 202
    assert redis_client.llen("revocation") == 1


def test_a_second_request_for_a_user_whose_check_is_still_queued_adds_no_task(client, redis_client):
    for _ in range(5):
        assert client.post("/graph/notifications", json=body(notification())).status_code == 202
    assert redis_client.llen("revocation") == 1
    assert metric(client, "idsync_webhook_events_collapsed_total") == 4
    # Once the worker started the task (and cleared the marker), the next change is a new task.
    redis_client.delete(f"idsync:pending:revocation.check_user:{USER_ID}")
    assert client.post("/graph/notifications", json=body(notification())).status_code == 202
    assert redis_client.llen("revocation") == 2


DEEP = 100_000


@pytest.mark.parametrize(("raw", "status"), [
    (b"[" * 1000 + b"]" * 1000, 400),
    (b'{"value": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),
    (b'{"a":' * DEEP + b"1" + b"}" * DEEP, 413),  # larger than the test body limit
    (b'{"value": [' + b"9" * 3000 + b"]}", 400),  # int() refuses that many digits
    (b'{"value": [{"x": 1e999999}]}', 400),
    (b'{"value": [NaN, Infinity]}', 400),
    (b"\xff\xfe\x00{", 400),  # invalid UTF-8
    (b'{"value": "\xc3\x28"}', 400),
    (b"", 400),
    (b"null", 400),
    (b"[]", 400),
    (b'"value"', 400),
    (b'{"value": null}', 400),
    (b'{"value": {}}', 400),
    (b'{"value": [null, 1, "x"]}', 400),
    (b"\x00" * 100, 400),
    # Unpaired surrogates ("\ud800" escapes) are valid JSON but not text: refused by the schema.
    (json.dumps({"value": [dict(notification(), clientState="\ud800")]}).encode(), 400),
    (json.dumps({"value": [dict(notification(), subscriptionId="\ud800\n\x1b[31m")]}).encode(), 400),
    (json.dumps({"value": [dict(notification(), tenantId="\udfff")]}).encode(), 400),
    (json.dumps({"value": [dict(notification(), resource="Users/\ud800")]}).encode(), 400),
    (json.dumps({"value": [dict(notification(), subscriptionId="sub\n\x1b[31m" * 100)]}).encode(), 202),
])
def test_any_body_gets_a_4xx_or_a_202_never_a_5xx(client, raw, status):
    assert client.post("/graph/notifications", content=raw, headers=JSON).status_code == status


def test_mutated_notification_bodies_never_get_a_5xx(client):
    import random

    rng = random.Random(6)
    valid = json.dumps(body(notification(), notification(resource=f"Groups/{GROUP_ID}"))).encode()
    statuses = set()
    for _ in range(300):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        for path in ("/graph/notifications", "/graph/lifecycle"):
            statuses.add(client.post(path, content=bytes(raw), headers=JSON).status_code)
    assert statuses <= {202, 400, 413}
    assert 400 in statuses


# --- content types, bounded logs, metrics off the public port


def test_a_body_that_is_not_declared_json_gets_415_and_nothing_is_queued(client, redis_client):
    raw = json.dumps(body(notification())).encode()
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
        response = client.post("/graph/notifications", content=raw, headers=headers)
        assert response.status_code == 415
    assert client.post("/graph/lifecycle", content=b"{}", headers={"content-type": "text/xml"}).status_code == 415
    assert redis_client.llen("revocation") == 0
    assert client.post("/graph/notifications", content=raw,
                       headers={"content-type": "Application/JSON; charset=utf-8"}).status_code == 202


def test_handshakes_work_whatever_the_content_type(client):
    for path in ("/graph/notifications", "/graph/lifecycle"):
        response = client.post(path, params={"validationToken": "tok"}, content=b"",
                               headers={"content-type": "text/plain; charset=utf-8"})
        assert (response.status_code, response.text) == (200, "tok")


def test_a_large_forged_request_logs_one_line_not_one_per_item(roomy_client):
    client = roomy_client
    with capture_logs() as logs:
        client.post("/graph/notifications", json=body(*[notification(state="guess")] * 30))
    assert [e["event"] for e in logs] == ["webhook_notifications"]
    assert logs[0]["dropped"] == {"client_state": 30}


def test_untrusted_values_are_logged_bounded_and_escaped():
    assert bounded("x" * 5000) == "x" * MAX_LOGGED_CHARS + "..."
    assert bounded("a\nb\x1b[31m\ud800") == "a\\u000ab\\u001b[31m\\ud800"


def test_lifecycle_for_a_subscription_we_did_not_create_is_ignored(settings, celery_app, redis_client):
    graph = FakeGraph()
    manager = SubscriptionManager(graph, redis_client, settings)
    manager.ensure()
    lifecycle = {"subscriptionId": "not-ours", "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                 "tenantId": TENANT, "clientState": CLIENT_STATE, "lifecycleEvent": "reauthorizationRequired"}
    with TestClient(create_app(settings, celery_app, redis_client, manager)) as client:
        assert client.post("/graph/lifecycle", json={"value": [lifecycle]}).status_code == 202
        assert metric(client, 'idsync_webhook_rejected_total{reason="unknown_subscription"}') == 1
    assert not [c for c in graph.calls if c[0] in ("reauthorize", "renew")]


def test_metrics_are_served_on_their_own_port_and_not_by_the_public_app(client):
    assert client.get("/metrics").status_code == 404
    client.post("/graph/notifications", json=body(notification()))
    port = free_port()
    server = serve_metrics(client.app.state.metrics, "127.0.0.1", port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    assert 'idsync_webhook_events_enqueued_total{lane="revocation"} 1.0' in text
