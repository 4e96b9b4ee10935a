"""The control API (`/_sandbox/...`) over real HTTPS against a running sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.config import DEFAULT_CONFIG, DEFAULT_FAULTS
from sandbox.server import SandboxServer


@pytest.fixture
def admin(sandbox: SandboxServer, http: httpx.Client) -> Iterator[httpx.Client]:
    """An authenticated control-API client; puts config and faults back to their defaults after each test."""
    http.headers["Authorization"] = f"Bearer {sandbox.state.creds.admin_token}"
    try:
        yield http
    finally:
        http.headers.pop("Authorization", None)
        sandbox.state.config.patch(DEFAULT_CONFIG)
        sandbox.state.faults.patch(DEFAULT_FAULTS)


def _graph_token(http: httpx.Client, sandbox: SandboxServer) -> str:
    creds = sandbox.state.creds
    response = http.post(
        f"/{creds.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds.graph_client_id,
            "client_secret": creds.graph_client_secret,
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


# ---------------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_sandbox/config"),
        ("PATCH", "/_sandbox/config"),
        ("GET", "/_sandbox/faults"),
        ("PATCH", "/_sandbox/faults"),
        ("GET", "/_sandbox/clock"),
        ("POST", "/_sandbox/clock"),
        ("GET", "/_sandbox/activity"),
        ("GET", "/_sandbox/"),
        ("POST", "/_sandbox/graph/invitations/x/accept"),
        ("PUT", "/_sandbox/salesforce/users/x/deactivation-blocker"),
        ("DELETE", "/_sandbox/salesforce/users/x/deactivation-blocker"),
        ("POST", "/_sandbox/graph/subscriptions/x/reauthorize-required"),
        ("POST", "/_sandbox/graph/subscriptions/x/remove"),
        ("POST", "/_sandbox/reset"),
    ],
)
def test_every_control_endpoint_rejects_a_request_without_the_admin_token(
    http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, json={"graph": {"delta_page_size": 1}})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_wrong_admin_token_is_rejected_and_changes_nothing(sandbox: SandboxServer, http: httpx.Client) -> None:
    before = sandbox.state.config.get("graph.delta_page_size")
    response = http.patch(
        "/_sandbox/config",
        json={"graph": {"delta_page_size": before + 1}},
        headers={"Authorization": "Bearer " + sandbox.state.creds.admin_token + "x"},
    )
    assert response.status_code == 401
    assert sandbox.state.config.get("graph.delta_page_size") == before


def test_the_admin_token_is_also_accepted_as_a_query_parameter(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = http.get("/_sandbox/clock", params={"token": sandbox.state.creds.admin_token})
    assert response.status_code == 200
    assert "offset_s" in response.json()


def test_health_answers_without_a_token_and_reveals_nothing(http: httpx.Client) -> None:
    response = http.get("/_sandbox/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# ---------------------------------------------------------------------------------------------------- config


def test_get_config_returns_both_sections_with_the_documented_settings(admin: httpx.Client) -> None:
    config = admin.get("/_sandbox/config").json()
    for key in ("ru_per_10s", "delta_page_size", "delta_duplicate_rate"):
        assert key in config["graph"]
    for key in ("daily_api_limit", "session_lifetime_s"):
        assert key in config["salesforce"]


def test_patching_config_returns_and_stores_the_merged_settings(sandbox: SandboxServer, admin: httpx.Client) -> None:
    response = admin.patch(
        "/_sandbox/config",
        json={"graph": {"ru_per_10s": 100, "delta_duplicate_rate": 0.25}, "salesforce": {"daily_api_limit": 500}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["graph"]["ru_per_10s"] == 100
    assert body["graph"]["delta_duplicate_rate"] == 0.25
    assert body["salesforce"]["daily_api_limit"] == 500
    assert body["salesforce"]["session_lifetime_s"] == sandbox.state.config.get("salesforce.session_lifetime_s")
    assert sandbox.state.config.get("graph.ru_per_10s") == 100
    assert sandbox.state.config.get("salesforce.daily_api_limit") == 500


def test_a_config_patch_changes_the_size_of_the_next_delta_page(
    sandbox: SandboxServer, admin: httpx.Client
) -> None:
    token = _graph_token(admin, sandbox)
    graph = {"Authorization": f"Bearer {token}"}
    assert admin.patch("/_sandbox/config", json={"graph": {"delta_page_size": 7}}).status_code == 200
    first = admin.get("/v1.0/users/delta", headers=graph)
    assert first.status_code == 200, first.text
    assert len(first.json()["value"]) == 7
    assert "@odata.nextLink" in first.json()

    assert admin.patch("/_sandbox/config", json={"graph": {"delta_page_size": 11}}).status_code == 200
    fresh = admin.get("/v1.0/users/delta", headers=graph)
    assert len(fresh.json()["value"]) == 11


def test_an_unknown_config_key_is_rejected_with_a_message_naming_it(
    sandbox: SandboxServer, admin: httpx.Client
) -> None:
    before = sandbox.state.config.snapshot()
    response = admin.patch("/_sandbox/config", json={"graph": {"delta_page_size": 5, "delta_pagesize": 5}})
    assert response.status_code == 400
    assert "graph.delta_pagesize" in response.json()["error"]["message"]
    assert sandbox.state.config.snapshot() == before, "a rejected patch must not be applied in part"


def test_an_unknown_config_section_is_rejected(admin: httpx.Client) -> None:
    response = admin.patch("/_sandbox/config", json={"grpah": {"ru_per_10s": 5}})
    assert response.status_code == 400
    assert "'grpah'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"graph": {"delta_page_size": "fifty"}}, "graph.delta_page_size must be a number"),
        ({"graph": {"delta_page_size": 0}}, "at least 1"),
        ({"graph": {"delta_page_size": 2.5}}, "integer"),
        ({"graph": {"delta_duplicate_rate": 1.5}}, "between 0 and 1"),
        ({"salesforce": {"daily_api_limit": -1}}, "negative"),
        ({"salesforce": {"daily_api_limit": True}}, "must be a number"),
        (["graph"], "JSON object"),
    ],
)
def test_config_values_of_the_wrong_type_or_range_are_rejected(
    admin: httpx.Client, patch: Any, fragment: str
) -> None:
    response = admin.patch("/_sandbox/config", json=patch)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_a_body_that_is_not_json_is_a_400(admin: httpx.Client) -> None:
    response = admin.patch("/_sandbox/config", content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_null_in_a_config_patch_restores_the_default(sandbox: SandboxServer, admin: httpx.Client) -> None:
    admin.patch("/_sandbox/config", json={"graph": {"ru_per_10s": 3}})
    response = admin.patch("/_sandbox/config", json={"graph": {"ru_per_10s": None}})
    assert response.json()["graph"]["ru_per_10s"] == DEFAULT_CONFIG["graph"]["ru_per_10s"]
    assert sandbox.state.config.get("graph.ru_per_10s") == DEFAULT_CONFIG["graph"]["ru_per_10s"]


# ---------------------------------------------------------------------------------------------------- faults


def test_patching_faults_stores_every_documented_fault(sandbox: SandboxServer, admin: httpx.Client) -> None:
    patch: dict[str, dict[str, Any]] = {
        "salesforce": {"error_rate": 0.1, "error_kinds": ["503", "UNABLE_TO_LOCK_ROW", "timeout", "reset"],
                       "latency_ms": 20},
        "graph": {"throttle_rate": 0.2, "notification_drop_rate": 0.3, "notification_duplicate_rate": 0.4},
    }
    response = admin.patch("/_sandbox/faults", json=patch)
    assert response.status_code == 200, response.text
    assert admin.get("/_sandbox/faults").json()["salesforce"]["error_kinds"] == patch["salesforce"]["error_kinds"]
    assert sandbox.state.faults.get("salesforce.error_rate") == 0.1
    assert sandbox.state.faults.get("salesforce.latency_ms") == 20
    assert sandbox.state.faults.get("graph.throttle_rate") == 0.2
    assert sandbox.state.faults.get("graph.notification_drop_rate") == 0.3
    assert sandbox.state.faults.get("graph.notification_duplicate_rate") == 0.4


def test_an_unknown_salesforce_error_kind_is_rejected_by_name(sandbox: SandboxServer, admin: httpx.Client) -> None:
    response = admin.patch("/_sandbox/faults", json={"salesforce": {"error_kinds": ["503", "500"]}})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'500'" in message and "UNABLE_TO_LOCK_ROW" in message
    assert sandbox.state.faults.get("salesforce.error_kinds") == ["503"]


def test_an_empty_list_of_salesforce_error_kinds_is_rejected(admin: httpx.Client) -> None:
    response = admin.patch("/_sandbox/faults", json={"salesforce": {"error_kinds": []}})
    assert response.status_code == 400


def test_an_unknown_fault_is_rejected_with_a_message_naming_it(admin: httpx.Client) -> None:
    response = admin.patch("/_sandbox/faults", json={"graph": {"throttle_rat": 0.5}})
    assert response.status_code == 400
    assert "graph.throttle_rat" in response.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------------- clock


def test_advancing_the_clock_moves_the_sandbox_clock_and_reports_it(
    sandbox: SandboxServer, admin: httpx.Client
) -> None:
    before = admin.get("/_sandbox/clock").json()
    response = admin.post("/_sandbox/clock", json={"advance_s": 8 * 24 * 3600})
    assert response.status_code == 200
    after = response.json()
    assert after["offset_s"] == pytest.approx(before["offset_s"] + 8 * 24 * 3600)
    assert sandbox.state.clock.offset == pytest.approx(after["offset_s"])
    assert after["time"] - before["time"] >= 8 * 24 * 3600
    assert after["now"].endswith("Z") and after["now"] > before["now"]


def test_the_clock_never_moves_backwards(sandbox: SandboxServer, admin: httpx.Client) -> None:
    offset = sandbox.state.clock.offset
    response = admin.post("/_sandbox/clock", json={"advance_s": -60})
    assert response.status_code == 400
    assert sandbox.state.clock.offset == offset


def test_advancing_the_clock_needs_a_number(admin: httpx.Client) -> None:
    assert admin.post("/_sandbox/clock", json={"advance": 5}).status_code == 400
    assert admin.post("/_sandbox/clock", json={"advance_s": "5"}).status_code == 400


# ---------------------------------------------------------------------------------------------------- activity


def test_activity_can_be_filtered_by_kind(sandbox: SandboxServer, admin: httpx.Client) -> None:
    sandbox.state.activity.add("webhook_delivery", url="http://127.0.0.1:1/hook", status=202)
    sandbox.state.activity.add("test_marker", note="not a delivery")
    body = admin.get("/_sandbox/activity", params={"kind": "webhook_delivery"}).json()
    assert body["items"], "the delivery just recorded must be listed"
    assert {item["kind"] for item in body["items"]} == {"webhook_delivery"}
    assert body["counters"]["test_marker"] >= 1


# ---------------------------------------------------------------------------------------------------- hooks


def test_accepting_an_invitation_for_an_unknown_user_is_a_404_or_names_the_missing_hook(admin: httpx.Client) -> None:
    response = admin.post("/_sandbox/graph/invitations/00000000-0000-0000-0000-000000000000/accept")
    assert response.status_code in (404, 501)
    assert response.json()["error"]["message"]


def test_a_deactivation_blocker_needs_a_reason(admin: httpx.Client) -> None:
    response = admin.put("/_sandbox/salesforce/users/005000000000000AAA/deactivation-blocker", json={})
    assert response.status_code == 400
    assert "reason" in response.json()["error"]["message"]


def test_accepting_a_pending_invitation_marks_the_guest_accepted(sandbox: SandboxServer, admin: httpx.Client) -> None:
    token = _graph_token(admin, sandbox)
    invited = admin.post(
        "/v1.0/invitations",
        headers={"Authorization": f"Bearer {token}"},
        json={"invitedUserEmailAddress": "guest.admin-test@fabrikam.example", "inviteRedirectUrl": "https://myapps"},
    )
    assert invited.status_code == 201, invited.text
    user_id = invited.json()["invitedUser"]["id"]
    assert sandbox.state.directory.users[user_id]["externalUserState"] == "PendingAcceptance"

    response = admin.post(f"/_sandbox/graph/invitations/{user_id}/accept")
    assert response.status_code == 200, response.text
    assert response.json()["externalUserState"] == "Accepted"
    assert sandbox.state.directory.users[user_id]["externalUserState"] == "Accepted"
    again = admin.post(f"/_sandbox/graph/invitations/{user_id}/accept")
    assert again.status_code == 400, "an invitation can be accepted once"


def test_a_deactivation_blocker_is_set_and_cleared_on_the_salesforce_user(
    sandbox: SandboxServer, admin: httpx.Client
) -> None:
    org = sandbox.state.org
    user_id = next(u["Id"] for u in org.records("User") if u["Id"] not in org.deactivation_blockers)
    path = f"/_sandbox/salesforce/users/{user_id}/deactivation-blocker"
    assert admin.put(path, json={"reason": "default_lead_owner"}).status_code == 200
    assert org.deactivation_blockers[user_id] == "default_lead_owner"
    assert admin.delete(path).status_code == 200
    assert user_id not in org.deactivation_blockers


def test_a_blocker_for_an_unknown_salesforce_user_is_a_404(admin: httpx.Client) -> None:
    response = admin.put("/_sandbox/salesforce/users/005000000000000AAA/deactivation-blocker", json={"reason": "x"})
    assert response.status_code == 404


def test_forcing_reauthorization_of_an_unknown_subscription_is_a_404(admin: httpx.Client) -> None:
    response = admin.post("/_sandbox/graph/subscriptions/00000000-0000-0000-0000-000000000000/reauthorize-required")
    assert response.status_code == 404


def test_removing_an_unknown_subscription_is_a_404(admin: httpx.Client) -> None:
    response = admin.post("/_sandbox/graph/subscriptions/00000000-0000-0000-0000-000000000000/remove")
    assert response.status_code == 404


# ---------------------------------------------------------------------------------------------------- reset


def test_reset_puts_clock_config_faults_and_subscriptions_back_to_how_the_sandbox_started(
    sandbox: SandboxServer, admin: httpx.Client
) -> None:
    from sandbox.graph.subscription_store import ResourceSpec, Subscription

    started_with = sandbox.state.config.snapshot()
    assert admin.post("/_sandbox/clock", json={"advance_s": 3 * 86400}).status_code == 200
    assert admin.patch("/_sandbox/config", json={"graph": {"delta_page_size": 7}}).status_code == 200
    assert admin.patch("/_sandbox/faults", json={"graph": {"throttle_rate": 1.0}}).status_code == 200
    now = sandbox.state.clock.time()
    with sandbox.state.lock:
        sandbox.state.notifier.store.add(Subscription(
            resource="/users", spec=ResourceSpec("users"), change_types=("updated",), notification_url="http://127.0.0.1:9/x",
            expiration=now + 3600, application_id="app", creator_id="", tenant_id="t", created_at=now))
    assert sandbox.state.clock.offset >= 3 * 86400

    response = admin.post("/_sandbox/reset")

    assert response.status_code == 200
    assert response.json()["subscriptions_removed"] == 1
    assert response.json()["clock"]["offset_s"] == 0
    assert sandbox.state.clock.offset == 0
    assert sandbox.state.config.snapshot() == started_with
    assert sandbox.state.faults.get("graph.throttle_rate") == 0.0
    with sandbox.state.lock:
        assert sandbox.state.notifier.store.items == {}


def test_reset_returns_to_the_settings_given_at_start_not_to_the_bare_defaults(tmp_path) -> None:
    server = SandboxServer(tmp_path / "sb", users=2, groups=1, seed=3)
    server.state.config.patch({"graph": {"delta_page_size": 11}})  # as `--set graph.delta_page_size=11` does
    server.start()
    try:
        server.state.config.patch({"graph": {"delta_page_size": 99}})
        server.state.config.reset()
        assert server.state.config.get("graph.delta_page_size") == 11
        assert DEFAULT_CONFIG["graph"]["delta_page_size"] != 11
    finally:
        server.stop()


def test_the_status_page_shows_the_seeded_users_of_both_sides(sandbox: SandboxServer, http: httpx.Client) -> None:
    with sandbox.state.lock:
        upn = next(iter(sandbox.state.directory.users.values()))["userPrincipalName"]
    username = sandbox.state.org.records("User")[0]["Username"]
    response = http.get("/_sandbox/", params={"token": sandbox.state.creds.admin_token, "size": 500})
    assert response.status_code == 200
    assert upn in response.text and username in response.text
    assert "limit" in response.text and "graph_request" in response.text
