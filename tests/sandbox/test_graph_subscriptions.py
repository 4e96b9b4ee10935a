"""Graph change-notification subscriptions and webhook delivery in the sandbox, over real HTTPS.

Each test names the documented behaviour it checks. Receivers are real local HTTP(S) servers; directory changes
are made through the sandbox's Directory, so these tests depend only on the subscription/notifier code and the
directory's change feed. Timeouts and backoffs are shrunk through the sandbox config to keep the set fast.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trustme

from sandbox.graph.identity import issue_token
from sandbox.graph.subscription_store import format_graph_datetime, parse_datetime

_spec = importlib.util.spec_from_file_location("webhook_receiver", Path(__file__).with_name("webhook_receiver.py"))
assert _spec and _spec.loader
_receiver_mod = importlib.util.module_from_spec(_spec)
sys.modules["webhook_receiver"] = _receiver_mod
_spec.loader.exec_module(_receiver_mod)
WebhookReceiver = _receiver_mod.WebhookReceiver

pytestmark = pytest.mark.integration

# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated(sandbox: Any) -> Iterator[None]:
    """Each test starts with no subscriptions, nothing queued and default tunables (the server is module-scoped)."""
    state = sandbox.state
    config, faults = state.config.snapshot(), state.faults.snapshot()
    state.config.patch({"graph": {"notification_retry_base_s": 0.2, "notification_batch_window_ms": 30}})
    yield
    state.config.patch(config)
    state.faults.patch(faults)
    with state.lock:
        state.notifier.store.items.clear()
    state.notifier.clear()


@pytest.fixture
def api(sandbox: Any, ssl_ctx: Any) -> Iterator[httpx.Client]:
    """A Graph client with a fresh app token (tests advance the sandbox clock, which ages tokens)."""
    token, _ = issue_token(sandbox.state)
    with httpx.Client(
        base_url=sandbox.base_url + "/v1.0",
        verify=ssl_ctx,
        trust_env=False,
        timeout=20,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Any]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def other_receiver() -> Iterator[Any]:
    with WebhookReceiver() as r:
        yield r


# ---------------------------------------------------------------------------------------------------- helpers


def refresh_token(api: httpx.Client, sandbox: Any) -> None:
    """A new token after advancing the sandbox clock, as a client's token cache would fetch."""
    api.headers["Authorization"] = "Bearer " + issue_token(sandbox.state)[0]


def expiry_in(sandbox: Any, seconds: float) -> str:
    return format_graph_datetime(sandbox.state.clock.time() + seconds)


def subscribe(api: httpx.Client, sandbox: Any, url: str, **overrides: Any) -> httpx.Response:
    body = {
        "changeType": "updated,deleted",
        "notificationUrl": url,
        "resource": "/users",
        "expirationDateTime": expiry_in(sandbox, 3600 * 24),
        "clientState": "secret-client-state",
    }
    body.update(overrides)
    return api.post("/subscriptions", json={k: v for k, v in body.items() if v is not None})


def subscribed(api: httpx.Client, sandbox: Any, url: str, **overrides: Any) -> dict[str, Any]:
    resp = subscribe(api, sandbox, url, **overrides)
    assert resp.status_code == 201, resp.text
    return resp.json()


def new_user(sandbox: Any) -> str:
    nick = "t" + uuid.uuid4().hex[:10]
    user = sandbox.state.directory.create_user(
        {
            "accountEnabled": True,
            "displayName": f"Test {nick}",
            "mailNickname": nick,
            "userPrincipalName": f"{nick}@{sandbox.state.directory.tenant_domain}",
            "passwordProfile": {"password": "xWwvJ]6NMw+bWH-d"},
        }
    )
    return str(user["id"])


def touch_user(sandbox: Any, user_id: str) -> None:
    sandbox.state.directory.update_user(user_id, {"jobTitle": "Title " + uuid.uuid4().hex[:8]})


def activity(sandbox: Any, kind: str, subscription_id: str | None = None) -> list[dict[str, Any]]:
    items = sandbox.state.activity.recent(kind, limit=500)
    return [i for i in items if subscription_id is None or subscription_id in str(i.get("subscription_id"))]


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return bool(predicate())


def ids_of(notifications: list[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    return [n for n in notifications if n.get("resourceData", {}).get("id") == user_id]


# ------------------------------------------------------------------------------------ create and handshake


def test_handshake_echoing_the_decoded_token_creates_the_subscription(api: httpx.Client, sandbox: Any, receiver: Any):
    resp = subscribe(api, sandbox, receiver.url("/notify?tenant=contoso"), lifecycleNotificationUrl=None)
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert uuid.UUID(sub["id"])
    assert sub["resource"] == "/users"
    assert sub["changeType"] == "updated,deleted"
    assert sub["clientState"] == "secret-client-state"
    assert sub["notificationUrl"] == receiver.url("/notify?tenant=contoso")
    assert sub["applicationId"] == sandbox.state.creds.graph_client_id
    assert sub["includeResourceData"] is False
    assert sub["latestSupportedTlsVersion"] == "v1_2"
    for key in ("creatorId", "lifecycleNotificationUrl", "encryptionCertificate", "notificationQueryOptions"):
        assert key in sub
    (handshake,) = [r for r in receiver.received if r.is_validation]
    assert handshake.headers["content-type"] == "text/plain; charset=utf-8"
    assert handshake.query["tenant"] == ["contoso"], "the notificationUrl's own query string is kept"
    token = handshake.query["validationToken"][0]
    assert quote(token, safe="") != token, "the token needs URL encoding, so echoing it undecoded would fail"


def test_handshake_echoing_the_still_encoded_token_fails_with_validation_error(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    receiver.validation_mode = "encoded"
    resp = subscribe(api, sandbox, receiver.url())
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "ValidationError"
    assert "must respond with 200 OK to validation request" in resp.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["status", "json"])
def test_handshake_answered_with_non_200_or_json_fails_with_validation_error(
    api: httpx.Client, sandbox: Any, receiver: Any, mode: str
):
    receiver.validation_mode = mode
    resp = subscribe(api, sandbox, receiver.url())
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "ValidationError"
    assert api.get("/subscriptions").json()["value"] == []


def test_handshake_slower_than_the_validation_timeout_fails_as_timed_out(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    sandbox.state.config.patch({"graph": {"validation_timeout_s": 0.3}})
    receiver.validation_delay_s = 1.0
    resp = subscribe(api, sandbox, receiver.url())
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        **resp.json()["error"],
        "code": "InvalidRequest",
        "message": "Subscription validation request timed out.",
    }


def test_lifecycle_url_gets_its_own_handshake_and_must_pass_it(
    api: httpx.Client, sandbox: Any, receiver: Any, other_receiver: Any
):
    sub = subscribed(api, sandbox, receiver.url("/notify"), lifecycleNotificationUrl=receiver.url("/lifecycle"))
    assert sub["lifecycleNotificationUrl"] == receiver.url("/lifecycle")
    assert sorted(r.path for r in receiver.received if r.is_validation) == ["/lifecycle", "/notify"]
    other_receiver.validation_mode = "status"
    resp = subscribe(api, sandbox, receiver.url("/notify"), lifecycleNotificationUrl=other_receiver.url("/lifecycle"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "ValidationError"


def test_https_notification_url_is_trusted_through_the_notification_ca(api: httpx.Client, sandbox: Any, tmp_path: Path):
    ca = trustme.CA()
    ca_file = tmp_path / "notification-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with WebhookReceiver(tls_ca=ca) as tls_receiver:
        assert tls_receiver.url().startswith("https://")
        sandbox.state.notification_ca_path = None
        untrusted = subscribe(api, sandbox, tls_receiver.url())
        assert untrusted.status_code == 400 and untrusted.json()["error"]["code"] == "ValidationError"
        sandbox.state.notification_ca_path = ca_file
        try:
            subscribed(api, sandbox, tls_receiver.url())
            user_id = new_user(sandbox)
            assert ids_of(tls_receiver.wait_notifications(1), user_id)
        finally:
            sandbox.state.notification_ca_path = None


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://hooks.example.com/notify", False),
        ("http://10.1.2.3/notify", False),
        ("ftp://hooks.example.com/notify", False),
        ("http://127.0.0.1:{port}/notify", True),
        ("http://localhost:{port}/notify", True),
    ],
)
def test_plain_http_notification_url_is_rejected_except_for_loopback(
    api: httpx.Client, sandbox: Any, receiver: Any, url: str, accepted: bool
):
    port = receiver.base_url.rsplit(":", 1)[1]
    resp = subscribe(api, sandbox, url.format(port=port))
    if accepted:
        assert resp.status_code == 201, resp.text
    else:
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "InvalidRequest"
        assert not receiver.received, "an invalid URL is refused before any handshake"


def test_expiration_beyond_41760_minutes_or_in_the_past_is_rejected(api: httpx.Client, sandbox: Any, receiver: Any):
    too_far = subscribe(api, sandbox, receiver.url(), expirationDateTime=expiry_in(sandbox, 41760 * 60 + 120))
    assert too_far.status_code == 400
    assert too_far.json()["error"]["code"] == "InvalidRequest"
    assert "41760 minutes" in too_far.json()["error"]["message"]
    past = subscribe(api, sandbox, receiver.url(), expirationDateTime=expiry_in(sandbox, -60))
    assert past.status_code == 400
    at_limit = subscribe(api, sandbox, receiver.url(), expirationDateTime=expiry_in(sandbox, 41760 * 60 - 60))
    assert at_limit.status_code == 201, at_limit.text


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"changeType": None}, "changeType"),
        ({"resource": None}, "resource"),
        ({"notificationUrl": None}, "notificationUrl"),
        ({"expirationDateTime": None}, "expirationDateTime"),
        ({"changeType": "updated,renamed"}, "Invalid 'changeType' attribute: 'renamed'."),
        ({"resource": "/me/messages"}, "/me/messages"),
        ({"resource": "https://graph.microsoft.com/v1.0/users"}, "base URL"),
        ({"clientState": "x" * 129}, "128"),
    ],
)
def test_invalid_subscription_requests_are_rejected_with_400(
    api: httpx.Client, sandbox: Any, receiver: Any, override: dict[str, Any], needle: str
):
    resp = subscribe(api, sandbox, receiver.url(), **override)
    assert resp.status_code == 400
    assert needle in resp.json()["error"]["message"]


@pytest.mark.parametrize("resource", ["users", "/users/{uid}", "/groups", "/groups/{gid}", "/groups/{gid}/members"])
def test_documented_user_and_group_resources_are_accepted(
    api: httpx.Client, sandbox: Any, receiver: Any, resource: str
):
    resource = resource.format(uid=uuid.uuid4(), gid=uuid.uuid4())
    assert subscribed(api, sandbox, receiver.url(), resource=resource)["resource"] == resource


def test_users_subscription_needs_a_user_or_directory_read_role(sandbox: Any, ssl_ctx: Any, receiver: Any):
    token, _ = issue_token(sandbox.state, roles=["Group.Read.All"])
    with httpx.Client(
        base_url=sandbox.base_url + "/v1.0",
        verify=ssl_ctx,
        trust_env=False,
        headers={"Authorization": f"Bearer {token}"},
    ) as group_only:
        denied = subscribe(group_only, sandbox, receiver.url(), resource="/users")
        assert denied.status_code == 403
        assert subscribe(group_only, sandbox, receiver.url(), resource="/groups").status_code == 201


def test_quota_per_app_exceeded_returns_403_naming_the_limit(api: httpx.Client, sandbox: Any, receiver: Any):
    sandbox.state.config.patch({"graph": {"subscription_quota_per_app": 2}})
    subscribed(api, sandbox, receiver.url())
    subscribed(api, sandbox, receiver.url())
    resp = subscribe(api, sandbox, receiver.url())
    assert resp.status_code == 403
    assert "limit: 2" in resp.json()["error"]["message"]


def test_each_subscription_gets_its_own_id_and_can_be_listed_read_and_deleted(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    first = subscribed(api, sandbox, receiver.url())
    second = subscribed(api, sandbox, receiver.url())
    assert first["id"] != second["id"]
    listed = api.get("/subscriptions").json()["value"]
    assert sorted(s["id"] for s in listed) == sorted([first["id"], second["id"]])
    got = api.get(f"/subscriptions/{first['id']}")
    assert got.status_code == 200 and got.json()["resource"] == "/users"
    assert got.json()["clientState"] is None, "reads don't hand the clientState secret out again"
    assert api.delete(f"/subscriptions/{first['id']}").status_code == 204
    assert api.get(f"/subscriptions/{first['id']}").status_code == 404
    assert [s["id"] for s in api.get("/subscriptions").json()["value"]] == [second["id"]]


# --------------------------------------------------------------------------------------------------- delivery


def test_user_update_delivers_an_updated_notification_with_the_documented_shape(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    user_id = new_user(sandbox)
    sub = subscribed(api, sandbox, receiver.url("/notify?source=graph"))
    touch_user(sandbox, user_id)
    (note,) = ids_of(receiver.wait_notifications(1), user_id)
    assert note["changeType"] == "updated"
    assert note["subscriptionId"] == sub["id"]
    assert note["clientState"] == "secret-client-state"
    assert note["tenantId"] == sandbox.state.creds.tenant_id
    assert note["resource"] == f"Users/{user_id}"
    assert note["resourceData"] == {
        "@odata.type": "#Microsoft.Graph.User",
        "@odata.id": f"Users/{user_id}",
        "id": user_id,
    }
    assert parse_datetime(note["subscriptionExpirationDateTime"]) == pytest.approx(
        parse_datetime(sub["expirationDateTime"]), abs=0.001
    )
    assert note["id"]
    post = receiver.notification_posts()[0]
    assert post.query == {"source": ["graph"]}
    assert post.headers["content-type"].startswith("application/json")


def test_user_changed_through_the_graph_api_is_notified(api: httpx.Client, sandbox: Any, receiver: Any):
    user_id = new_user(sandbox)
    subscribed(api, sandbox, receiver.url())
    resp = api.patch(f"/users/{user_id}", json={"department": "Dept " + uuid.uuid4().hex[:6]})
    assert resp.status_code == 204, resp.text
    assert ids_of(receiver.wait_notifications(1), user_id)[0]["changeType"] == "updated"


def test_user_create_and_soft_delete_arrive_as_updated_and_hard_delete_as_deleted(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    subscribed(api, sandbox, receiver.url())
    user_id = new_user(sandbox)
    sandbox.state.directory.soft_delete_user(user_id)
    sandbox.state.directory.hard_delete(user_id)
    receiver.wait_for(lambda r: len(ids_of(r.notifications(), user_id)) >= 3, "three notifications for the user")
    assert [n["changeType"] for n in ids_of(receiver.notifications(), user_id)] == ["updated", "updated", "deleted"]


def test_created_only_users_subscription_is_accepted_but_never_fires(
    api: httpx.Client, sandbox: Any, receiver: Any, other_receiver: Any
):
    subscribed(api, sandbox, receiver.url(), changeType="created")
    subscribed(api, sandbox, other_receiver.url(), changeType="created,updated")
    user_id = new_user(sandbox)
    assert ids_of(other_receiver.wait_notifications(1), user_id)[0]["changeType"] == "updated"
    receiver.assert_never(lambda r: bool(r.notification_posts()), "a notification for the created-only subscription")


def test_single_user_subscription_reports_only_that_user(api: httpx.Client, sandbox: Any, receiver: Any):
    watched, other = new_user(sandbox), new_user(sandbox)
    subscribed(api, sandbox, receiver.url(), resource=f"/users/{watched}")
    touch_user(sandbox, other)
    touch_user(sandbox, watched)
    notes = receiver.wait_notifications(1)
    assert {n["resourceData"]["id"] for n in notes} == {watched}


def test_group_membership_change_notifies_group_and_members_subscriptions(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    directory = sandbox.state.directory
    group = directory.create_group(
        {
            "displayName": "Sales",
            "mailEnabled": False,
            "mailNickname": "sales" + uuid.uuid4().hex[:6],
            "securityEnabled": True,
        }
    )
    user_id = new_user(sandbox)
    subscribed(api, sandbox, receiver.url("/groups"), resource="/groups")
    subscribed(api, sandbox, receiver.url("/members"), resource=f"/groups/{group['id']}/members")
    directory.add_member(group["id"], user_id)
    for path in ("/groups", "/members"):
        (note,) = receiver.wait_notifications(1, path=path)
        assert note["resource"] == f"Groups/{group['id']}"
        assert note["resourceData"]["@odata.type"] == "#Microsoft.Graph.Group"


def test_pending_notifications_for_one_url_are_batched_into_one_value_array(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    sandbox.state.config.patch({"graph": {"notification_batch_window_ms": 300}})
    first = subscribed(api, sandbox, receiver.url())
    second = subscribed(api, sandbox, receiver.url())
    users = [new_user(sandbox) for _ in range(3)]
    receiver.wait_notifications(6)
    (post,) = receiver.notification_posts()
    assert {n["subscriptionId"] for n in post.json["value"]} == {first["id"], second["id"]}
    assert {n["resourceData"]["id"] for n in post.json["value"]} == set(users)


def test_one_change_can_produce_several_updated_notifications(api: httpx.Client, sandbox: Any, receiver: Any):
    sandbox.state.config.patch({"graph": {"notifications_per_change": 3}})
    subscribed(api, sandbox, receiver.url())
    user_id = new_user(sandbox)
    receiver.wait_for(lambda r: len(ids_of(r.notifications(), user_id)) >= 3, "three notifications for one change")
    receiver.assert_never(lambda r: len(ids_of(r.notifications(), user_id)) > 3, "a fourth notification", 0.5)
    notes = ids_of(receiver.notifications(), user_id)
    assert len(notes) == 3 and len({n["id"] for n in notes}) == 3
    assert {n["changeType"] for n in notes} == {"updated"}


def test_failed_deliveries_are_retried_with_backoff_until_they_succeed(api: httpx.Client, sandbox: Any, receiver: Any):
    receiver.statuses = [503, 500]
    sub = subscribed(api, sandbox, receiver.url())
    user_id = new_user(sandbox)
    receiver.wait_for(lambda r: len(r.notification_posts()) >= 3, "two failed attempts and a successful one")
    ids = [p.json["value"][0]["id"] for p in receiver.notification_posts()]
    assert len(ids) == 3 and len(set(ids)) == 1, "the same notification is resent"
    assert wait_until(lambda: len(activity(sandbox, "webhook_delivery", sub["id"])) >= 3)
    log = activity(sandbox, "webhook_delivery", sub["id"])
    assert [(d["attempt"], d["status"]) for d in log] == [(1, 503), (2, 500), (3, 202)]
    assert ids_of(receiver.notifications(), user_id)


def test_delivery_still_failing_when_the_4_hour_retry_window_ends_is_discarded(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    receiver.default_status = 500
    sub = subscribed(api, sandbox, receiver.url(), expirationDateTime=expiry_in(sandbox, 3 * 24 * 3600))
    lost_user = new_user(sandbox)
    receiver.wait_for(lambda r: bool(ids_of(r.notifications(), lost_user)), "the first, failing attempt")
    sandbox.state.clock.advance(4 * 3600 + 60)
    assert wait_until(lambda: activity(sandbox, "webhook_discarded", sub["id"]))
    assert activity(sandbox, "webhook_discarded", sub["id"])[0]["reason"] == "retry_window_elapsed"
    receiver.default_status = 202
    tries_before = len(ids_of(receiver.notifications(), lost_user))
    later_user = new_user(sandbox)
    receiver.wait_for(lambda r: bool(ids_of(r.notifications(), later_user)), "a later user's notification")
    # the retry base is 0.2 s: a retry still scheduled would arrive well within a second
    receiver.assert_never(lambda r: len(ids_of(r.notifications(), lost_user)) > tries_before,
                          "a retry of the discarded notification", period=1.5)


def test_client_error_response_is_not_retried(api: httpx.Client, sandbox: Any, receiver: Any):
    receiver.statuses = [400]
    subscribed(api, sandbox, receiver.url())
    rejected = new_user(sandbox)
    receiver.wait_for(lambda r: bool(ids_of(r.notifications(), rejected)), "the rejected notification")
    later = new_user(sandbox)
    receiver.wait_for(lambda r: bool(ids_of(r.notifications(), later)), "a later notification")
    # a retry would come after 0.2 s (the retry base), 0.4 s, ...: wait well past the first ones
    receiver.assert_never(lambda r: len(ids_of(r.notifications(), rejected)) > 1, "a retry after a 400", period=1.5)


def test_drop_rate_one_loses_notifications_silently(api: httpx.Client, sandbox: Any, receiver: Any):
    sub = subscribed(api, sandbox, receiver.url())
    sandbox.state.faults.patch({"graph": {"notification_drop_rate": 1.0}})
    lost = new_user(sandbox)
    assert wait_until(lambda: activity(sandbox, "webhook_dropped", sub["id"]))
    sandbox.state.faults.patch({"graph": {"notification_drop_rate": 0.0}})
    later = new_user(sandbox)
    receiver.wait_for(lambda r: bool(ids_of(r.notifications(), later)), "a notification after the fault cleared")
    receiver.assert_never(lambda r: bool(ids_of(r.notifications(), lost)), "the dropped notification", period=1.0)


def test_duplicate_rate_one_delivers_each_notification_twice(api: httpx.Client, sandbox: Any, receiver: Any):
    sandbox.state.faults.patch({"graph": {"notification_duplicate_rate": 1.0}})
    subscribed(api, sandbox, receiver.url())
    user_id = new_user(sandbox)
    receiver.wait_for(lambda r: len(ids_of(r.notifications(), user_id)) >= 2, "the notification and its twin")
    receiver.assert_never(lambda r: len(ids_of(r.notifications(), user_id)) > 2, "a third copy", period=0.5)
    notes = ids_of(receiver.notifications(), user_id)
    assert len(notes) == 2 and notes[0] == notes[1]


def test_a_slow_endpoint_does_not_delay_a_healthy_one(
    api: httpx.Client, sandbox: Any, receiver: Any, other_receiver: Any
):
    sandbox.state.config.patch({"graph": {"notification_timeout_s": 8.0}})
    gate = threading.Event()
    receiver.gate = gate  # the slow endpoint holds every notification POST until released
    try:
        subscribed(api, sandbox, receiver.url())
        subscribed(api, sandbox, other_receiver.url())
        first = new_user(sandbox)
        receiver.wait_for(lambda r: len(r.notification_posts()) >= 1, "the first POST to the slow endpoint")
        second = new_user(sandbox)
        got = other_receiver.wait_notifications(2)
        assert {n["resourceData"]["id"] for n in got} == {first, second}
        assert len(receiver.notification_posts()) == 1, "the slow endpoint was still holding its first POST"
    finally:
        gate.set()


def _slow_config(sandbox: Any, drop_pct: int) -> None:
    sandbox.state.config.patch(
        {
            "graph": {
                "notification_slow_ms": 100,
                "notification_slow_min_count": 3,
                "notification_throttle_slow_pct": 10,
                "notification_drop_slow_pct": drop_pct,
            }
        }
    )


def test_endpoint_with_10_percent_slow_responses_is_throttled_and_delayed_10_minutes(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    _slow_config(sandbox, drop_pct=101)
    receiver.delay_s = 0.2
    subscribed(api, sandbox, receiver.url())
    for _ in range(3):
        user_id = new_user(sandbox)
        receiver.wait_for(lambda r, u=user_id: bool(ids_of(r.notifications(), u)), "a slowly answered notification")
    assert wait_until(lambda: sandbox.state.notifier.endpoint_stats()[receiver.url()]["state"] == "throttled")
    stats = sandbox.state.notifier.endpoint_stats()[receiver.url()]
    assert stats["total"] == 3 and stats["slow"] == 3
    receiver.delay_s = 0.0
    delayed = new_user(sandbox)
    assert wait_until(lambda: sandbox.state.notifier.endpoint_stats()[receiver.url()]["pending"] == 1)
    receiver.assert_never(lambda r: bool(ids_of(r.notifications(), delayed)), "delivery before the 10 minutes",
                          period=1.0)
    sandbox.state.clock.advance(601)
    receiver.wait_for(lambda r: bool(ids_of(r.notifications(), delayed)), "the delayed notification")
    assert len(ids_of(receiver.notifications(), delayed)) == 1


def test_endpoint_with_15_percent_slow_responses_has_its_notifications_dropped(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    _slow_config(sandbox, drop_pct=15)
    receiver.delay_s = 0.2
    sub = subscribed(api, sandbox, receiver.url())
    for _ in range(3):
        user_id = new_user(sandbox)
        receiver.wait_for(lambda r, u=user_id: bool(ids_of(r.notifications(), u)), "a slowly answered notification")
    assert wait_until(lambda: sandbox.state.notifier.endpoint_stats()[receiver.url()]["state"] == "dropping")
    dropped = new_user(sandbox)
    assert wait_until(
        lambda: [d for d in activity(sandbox, "webhook_dropped", sub["id"]) if d["reason"] == "slow_endpoint"]
    )
    receiver.assert_never(lambda r: bool(ids_of(r.notifications(), dropped)), "the dropped notification", period=1.0)


# --------------------------------------------------------------------------------------- expiry and lifecycle


def test_reauthorization_required_is_sent_before_expiry_and_reauthorize_answers_204(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    sub = subscribed(
        api,
        sandbox,
        receiver.url("/notify"),
        lifecycleNotificationUrl=receiver.url("/lifecycle"),
        expirationDateTime=expiry_in(sandbox, 2 * 3600),
    )
    sandbox.state.clock.advance(3600 + 30)  # now less than 60 minutes remain
    (event,) = receiver.wait_notifications(1, path="/lifecycle")
    assert event == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": event["subscriptionExpirationDateTime"],
        "tenantId": sandbox.state.creds.tenant_id,
        "clientState": "secret-client-state",
        "lifecycleEvent": "reauthorizationRequired",
    }
    refresh_token(api, sandbox)
    assert api.post(f"/subscriptions/{sub['id']}/reauthorize").status_code == 204
    with sandbox.state.lock:
        next_at = sandbox.state.notifier.store.get(sub["id"]).next_reauth_at
    assert next_at > sandbox.state.clock.time(), "reauthorizing resets the timer"


def test_reauthorization_required_can_be_forced_through_the_notifier(api: httpx.Client, sandbox: Any, receiver: Any):
    sub = subscribed(api, sandbox, receiver.url("/notify"), lifecycleNotificationUrl=receiver.url("/lifecycle"))
    assert sandbox.state.notifier.trigger_reauthorization(sub["id"]) is True
    (event,) = receiver.wait_notifications(1, path="/lifecycle")
    assert event["lifecycleEvent"] == "reauthorizationRequired"
    receiver.assert_never(lambda r: bool(r.notification_posts(path="/notify")), "a change notification", 0.5)
    assert sandbox.state.notifier.trigger_reauthorization(str(uuid.uuid4())) is False


def test_the_removal_hook_deletes_the_subscription_and_sends_subscription_removed(
    api: httpx.Client, sandbox: Any, receiver: Any
):
    sub = subscribed(api, sandbox, receiver.url("/notify"), lifecycleNotificationUrl=receiver.url("/lifecycle"))
    assert sandbox.state.notifier.trigger_removal(sub["id"]) is True
    (event,) = receiver.wait_notifications(1, path="/lifecycle")
    assert event["lifecycleEvent"] == "subscriptionRemoved"
    assert event["subscriptionId"] == sub["id"]
    assert event["clientState"] == "secret-client-state"
    assert api.get(f"/subscriptions/{sub['id']}").status_code == 404
    new_user(sandbox)
    receiver.assert_never(lambda r: bool(r.notification_posts(path="/notify")), "a notification after removal", 1.0)
    assert sandbox.state.notifier.trigger_removal(sub["id"]) is False


def test_patch_renews_the_expiration_without_a_new_handshake(api: httpx.Client, sandbox: Any, receiver: Any):
    sub = subscribed(api, sandbox, receiver.url(), expirationDateTime=expiry_in(sandbox, 3600))
    handshakes = len([r for r in receiver.received if r.is_validation])
    new_expiry = expiry_in(sandbox, 41000 * 60)
    resp = api.patch(f"/subscriptions/{sub['id']}", json={"expirationDateTime": new_expiry})
    assert resp.status_code == 200, resp.text
    assert parse_datetime(resp.json()["expirationDateTime"]) == pytest.approx(parse_datetime(new_expiry), abs=0.001)
    assert len([r for r in receiver.received if r.is_validation]) == handshakes
    too_far = api.patch(f"/subscriptions/{sub['id']}", json={"expirationDateTime": expiry_in(sandbox, 41761 * 60)})
    assert too_far.status_code == 400
    lifecycle = api.patch(f"/subscriptions/{sub['id']}", json={"lifecycleNotificationUrl": receiver.url("/lc")})
    assert lifecycle.status_code == 400


def test_patch_moving_the_notification_url_validates_the_new_url_and_delivers_there(
    api: httpx.Client, sandbox: Any, receiver: Any, other_receiver: Any
):
    sub = subscribed(api, sandbox, receiver.url())
    other_receiver.validation_mode = "encoded"
    refused = api.patch(f"/subscriptions/{sub['id']}", json={"notificationUrl": other_receiver.url()})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "ValidationError"
    other_receiver.validation_mode = "echo"
    moved = api.patch(f"/subscriptions/{sub['id']}", json={"notificationUrl": other_receiver.url()})
    assert moved.status_code == 200 and moved.json()["notificationUrl"] == other_receiver.url()
    user_id = new_user(sandbox)
    assert ids_of(other_receiver.wait_notifications(1), user_id)
    receiver.assert_never(lambda r: bool(r.notification_posts()), "a notification at the old URL", period=0.5)


@pytest.mark.parametrize("suffix", ["Z", ".0000000Z", ".123+02:00", ""])
def test_expiration_accepts_graph_iso_8601_forms(api: httpx.Client, sandbox: Any, receiver: Any, suffix: str):
    base = sandbox.state.clock.time() + 2 * 86400
    offset = 7200 if suffix.endswith("+02:00") else 0
    stamp = datetime.fromtimestamp(int(base) + offset, UTC).strftime("%Y-%m-%dT%H:%M:%S") + suffix
    sub = subscribed(api, sandbox, receiver.url(), expirationDateTime=stamp)
    assert parse_datetime(sub["expirationDateTime"]) == pytest.approx(int(base) + (0.123 if "123" in suffix else 0))
    assert sub["expirationDateTime"].endswith("Z")


def test_expired_subscription_stops_notifying_and_disappears(
    api: httpx.Client, sandbox: Any, receiver: Any, other_receiver: Any
):
    short = subscribed(api, sandbox, receiver.url(), expirationDateTime=expiry_in(sandbox, 600))
    subscribed(api, sandbox, other_receiver.url(), expirationDateTime=expiry_in(sandbox, 3 * 24 * 3600))
    sandbox.state.clock.advance(601)
    refresh_token(api, sandbox)
    assert api.get(f"/subscriptions/{short['id']}").status_code == 404
    assert short["id"] not in [s["id"] for s in api.get("/subscriptions").json()["value"]]
    user_id = new_user(sandbox)
    other_receiver.wait_for(lambda r: bool(ids_of(r.notifications(), user_id)), "the live subscription's notification")
    receiver.assert_never(lambda r: bool(r.notification_posts()), "a notification for the expired subscription",
                          period=0.5)
