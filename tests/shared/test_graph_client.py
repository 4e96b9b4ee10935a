"""The Graph client against `httpx.MockTransport` and a fake token source (the real sandbox comes later)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import msal
import pytest
import trustme

import shared.graph_client as graph_module
from shared.errors import (
    AuthenticationFailed,
    DeltaExpired,
    GraphThrottled,
    NotFound,
    PermanentError,
    RetryableError,
    TransportError,
)
from shared.graph_client import GraphClient, parse_retry_after
from shared.limiter import Limiter
from shared.settings import Settings, load_settings

BASE = "https://graph.test/v1.0"
TENANT = "tenant-1"
SECRET = "graph-secret-value"


def _settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "graph_authority": f"https://login.test/{TENANT}",
        "graph_tenant_id": TENANT,
        "graph_client_id": "app-id",
        "graph_client_secret": SECRET,
        "graph_url": BASE,
        "backoff_base_s": 3.0,
    }
    base.update(overrides)
    return load_settings(_env_file=None, **base)


class FakeTokens:
    """Stands in for msal.ConfidentialClientApplication: hands out numbered tokens, counts cache drops."""

    def __init__(self, result: dict[str, Any] | None = None) -> None:
        self.issued = 0
        self.dropped = 0
        self.result = result

    def acquire_token_for_client(self, scopes: list[str], **_: Any) -> dict[str, Any]:
        assert scopes == ["https://graph.microsoft.com/.default"]
        if self.result is not None:
            return self.result
        return {"access_token": f"token-{self.issued + self.dropped}", "token_type": "Bearer"}

    def remove_tokens_for_client(self) -> None:
        self.dropped += 1


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    def __init__(self, *responses: httpx.Response | Handler | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        return item(request) if callable(item) else item


def _client(
    recorder: Recorder,
    *,
    limiter: Limiter | None = None,
    tokens: FakeTokens | None = None,
    lane: str = "sync",
    sleep: Callable[[float], None] | None = None,
    **settings: object,
) -> GraphClient:
    return GraphClient(
        _settings(**settings),
        limiter=limiter,
        lane=lane,
        http=httpx.Client(transport=httpx.MockTransport(recorder)),
        token_source=tokens or FakeTokens(),
        sleep=sleep or (lambda s: pytest.fail(f"unexpected sleep {s}")),
    )


def _graph_error(status: int, code: str, message: str = "m", headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": "req-42", "date": "x"}}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def limiter() -> Limiter:
    return Limiter(fakeredis.FakeRedis(decode_responses=True), _settings())


# --- requests and URLs -------------------------------------------------------------------------------------------
def test_requests_carry_the_app_token_and_resolve_paths_against_graph_url() -> None:
    rec = Recorder(httpx.Response(200, json={"id": "u1", "displayName": "Ann"}))
    client = _client(rec)
    assert client.get_user("u1", select=["id", "displayName"]) == {"id": "u1", "displayName": "Ann"}
    (req,) = rec.requests
    assert req.headers["Authorization"] == "Bearer token-0"
    assert str(req.url.copy_with(query=None)) == f"{BASE}/users/u1"
    assert req.url.params["$select"] == "id,displayName"


def test_ids_are_quoted_so_they_cannot_change_the_path() -> None:
    rec = Recorder(httpx.Response(200, json={}))
    _client(rec).get_user("../groups/x?y")
    assert rec.requests[0].url.raw_path.decode().startswith("/v1.0/users/..%2Fgroups%2Fx%3Fy")


def test_absolute_links_are_used_as_is_but_only_on_the_graph_host() -> None:
    rec = Recorder(httpx.Response(200, json={"value": []}))
    client = _client(rec)
    client.request("GET", f"{BASE}/users/delta?$skiptoken=abc")
    assert str(rec.requests[0].url) == f"{BASE}/users/delta?$skiptoken=abc"
    with pytest.raises(ValueError, match="outside"):
        client.request("GET", "https://evil.test/v1.0/users")
    assert len(rec.requests) == 1  # the token never left for the foreign host


def test_a_missing_user_is_none_and_a_deleted_one_is_read_from_deleted_items() -> None:
    rec = Recorder(
        _graph_error(404, "Request_ResourceNotFound"),
        httpx.Response(200, json={"id": "u1", "deletedDateTime": "2026-01-01T00:00:00Z"}),
    )
    client = _client(rec)
    assert client.get_user("u1") is None
    assert client.get_deleted_user("u1") == {"id": "u1", "deletedDateTime": "2026-01-01T00:00:00Z"}
    assert rec.requests[1].url.path == "/v1.0/directory/deletedItems/u1"


def test_a_user_gone_from_deleted_items_is_none() -> None:
    assert _client(Recorder(_graph_error(404, "Request_ResourceNotFound"))).get_deleted_user("u1") is None


def test_patch_user_sends_the_body() -> None:
    rec = Recorder(httpx.Response(204))
    _client(rec).patch_user("u1", {"accountEnabled": False})
    assert rec.requests[0].method == "PATCH"
    assert json.loads(rec.requests[0].content) == {"accountEnabled": False}


# --- errors ------------------------------------------------------------------------------------------------------
def test_graph_error_bodies_become_typed_errors_with_code_message_and_request_id() -> None:
    client = _client(Recorder(_graph_error(400, "Request_BadRequest", "Invalid property 'foo'.")))
    with pytest.raises(PermanentError) as caught:
        client.patch_user("u1", {"foo": 1})
    err = caught.value
    assert (err.service, err.status, err.code, err.message, err.request_id) == (
        "graph",
        400,
        "Request_BadRequest",
        "Invalid property 'foo'.",
        "req-42",
    )


def test_server_errors_and_non_json_bodies_are_retryable() -> None:
    client = _client(Recorder(httpx.Response(502, text="<html>bad gateway</html>")))
    with pytest.raises(RetryableError) as caught:
        client.get_user("u1")
    assert caught.value.status == 502 and caught.value.code is None


def test_timeouts_and_connection_failures_are_retryable_transport_errors() -> None:
    for exc, code in ((httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "connection")):
        client = _client(Recorder(exc))
        with pytest.raises(TransportError) as caught:
            client.get_user("u1")
        assert isinstance(caught.value, RetryableError) and caught.value.code == code


def test_a_rejected_token_is_dropped_and_the_call_retried_once_with_a_new_one() -> None:
    tokens = FakeTokens()
    rec = Recorder(_graph_error(401, "InvalidAuthenticationToken"), httpx.Response(200, json={"id": "u1"}))
    assert _client(rec, tokens=tokens).get_user("u1") == {"id": "u1"}
    assert tokens.dropped == 1
    assert [r.headers["Authorization"] for r in rec.requests] == ["Bearer token-0", "Bearer token-1"]


def test_a_token_rejected_twice_fails_as_authentication_not_a_loop() -> None:
    rec = Recorder(_graph_error(401, "InvalidAuthenticationToken"))
    with pytest.raises(AuthenticationFailed):
        _client(rec).get_user("u1")
    assert len(rec.requests) == 2


def test_token_endpoint_refusals_are_permanent_and_never_echo_the_secret() -> None:
    tokens = FakeTokens({"error": "invalid_client", "error_description": f"AADSTS7000215: bad secret {SECRET}"})
    rec = Recorder(httpx.Response(200, json={}))
    with pytest.raises(AuthenticationFailed) as caught:
        _client(rec, tokens=tokens).get_user("u1")
    assert caught.value.code == "invalid_client"
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.args)
    assert rec.requests == []


def test_token_service_trouble_is_retryable() -> None:
    with pytest.raises(RetryableError):
        _client(Recorder(httpx.Response(200)), tokens=FakeTokens({"error": "temporarily_unavailable"})).get_user("u")


# --- throttling --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "header", "expected"), [(429, "2.128", 2.128), (503, "7", 7.0)])
def test_throttling_raises_graph_throttled_and_blocks_the_whole_tenant_for_retry_after(
    limiter: Limiter, status: int, header: str, expected: float
) -> None:
    client = _client(
        Recorder(_graph_error(status, "TooManyRequests", headers={"Retry-After": header})),
        limiter=limiter,
        lane="revocation",
    )
    with pytest.raises(GraphThrottled) as caught:
        client.get_user("u1")
    assert caught.value.retry_after == pytest.approx(expected)
    assert caught.value.request_id == "req-42"
    assert expected - 1 < limiter.throttled_for("graph", TENANT) <= expected
    assert limiter.acquire("graph", "sync", TENANT) > 0  # the other lane is held off too


def test_throttling_without_retry_after_uses_exponential_default_backoff(limiter: Limiter) -> None:
    client = _client(Recorder(_graph_error(429, "TooManyRequests")), limiter=None)
    waits = []
    for _ in range(3):
        with pytest.raises(GraphThrottled) as caught:
            client.get_user("u1")
        waits.append(caught.value.retry_after)
    assert waits == [3.0, 6.0, 12.0]


def test_a_tenant_throttled_by_another_process_fails_fast_without_calling_graph(limiter: Limiter) -> None:
    limiter.block_until("graph", TENANT, 30)
    rec = Recorder(httpx.Response(200, json={}))
    with pytest.raises(GraphThrottled) as caught:
        _client(rec, limiter=limiter).get_user("u1")
    assert caught.value.retry_after is not None and caught.value.retry_after > 29
    assert rec.requests == []


def test_a_short_limiter_wait_is_slept_through_and_the_call_proceeds() -> None:
    fake = fakeredis.FakeRedis(decode_responses=True)
    limiter = Limiter(fake, _settings(graph_requests_per_s=1.0, revocation_reserved_share=0.0))
    assert limiter.acquire("graph", "sync", TENANT) == 0.0  # bucket of one, now empty
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        bucket = Limiter.bucket_key("graph", TENANT)
        fake.hset(bucket, "ts", float(fake.hget(bucket, "ts") or 0) - seconds)

    rec = Recorder(httpx.Response(200, json={"id": "u1"}))
    assert _client(rec, limiter=limiter, sleep=sleep).get_user("u1") == {"id": "u1"}
    assert len(slept) == 1 and 0 < slept[0] <= 1.0
    assert len(rec.requests) == 1


@pytest.mark.parametrize(("header", "expected"), [("5", 5.0), ("2.5", 2.5), (None, None), ("soon", None)])
def test_retry_after_parses_integers_floats_and_rejects_garbage(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_accepts_an_http_date() -> None:
    when = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    value = parse_retry_after(when)
    assert value is not None and 100 < value <= 120


# --- delta -------------------------------------------------------------------------------------------------------
def test_delta_pages_follow_next_links_until_the_delta_link() -> None:
    rec = Recorder(
        httpx.Response(200, json={"value": [{"id": "a"}], "@odata.nextLink": f"{BASE}/users/delta?$skiptoken=p2"}),
        httpx.Response(200, json={"value": [], "@odata.nextLink": f"{BASE}/users/delta?$skiptoken=p3"}),
        httpx.Response(200, json={"value": [{"id": "b"}], "@odata.deltaLink": f"{BASE}/users/delta?$deltatoken=d1"}),
    )
    pages = list(_client(rec).delta_pages("users", None, select=["id", "accountEnabled"]))
    assert [p["value"] for p in pages] == [[{"id": "a"}], [], [{"id": "b"}]]
    assert pages[-1]["@odata.deltaLink"].endswith("$deltatoken=d1")
    assert rec.requests[0].url.path == "/v1.0/users/delta"
    assert rec.requests[0].url.params["$select"] == "id,accountEnabled"
    assert str(rec.requests[1].url) == f"{BASE}/users/delta?$skiptoken=p2"  # links carry the query; none added
    assert str(rec.requests[2].url) == f"{BASE}/users/delta?$skiptoken=p3"


def test_delta_pages_resume_from_a_stored_delta_link() -> None:
    link = f"{BASE}/groups/delta?$deltatoken=stored"
    rec = Recorder(httpx.Response(200, json={"value": [], "@odata.deltaLink": f"{BASE}/groups/delta?$deltatoken=n"}))
    pages = list(_client(rec).delta_pages("groups", link, select=["id"]))
    assert len(pages) == 1
    assert str(rec.requests[0].url) == link


def test_an_expired_delta_link_raises_delta_expired_with_the_restart_location() -> None:
    location = f"{BASE}/users/delta?$deltatoken="
    rec = Recorder(_graph_error(410, "syncStateNotFound", headers={"Location": location}))
    with pytest.raises(DeltaExpired) as caught:
        list(_client(rec).delta_pages("users", f"{BASE}/users/delta?$deltatoken=old"))
    assert caught.value.location == location
    assert caught.value.code == "syncStateNotFound"


def test_delta_is_only_for_users_and_groups() -> None:
    with pytest.raises(ValueError):
        list(_client(Recorder(httpx.Response(200))).delta_pages("devices", None))


# --- subscriptions -----------------------------------------------------------------------------------------------
def test_create_subscription_posts_graph_shaped_body_with_utc_expiration() -> None:
    rec = Recorder(httpx.Response(201, json={"id": "sub-1"}))
    expiration = datetime(2026, 5, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    result = _client(rec).create_subscription(
        "/users", "https://hook.test/notify", "https://hook.test/lifecycle", "cs-123", expiration
    )
    assert result == {"id": "sub-1"}
    body = json.loads(rec.requests[0].content)
    assert body == {
        "changeType": "updated,deleted",
        "notificationUrl": "https://hook.test/notify",
        "lifecycleNotificationUrl": "https://hook.test/lifecycle",
        "resource": "/users",
        "expirationDateTime": "2026-05-01T11:00:00.000000Z",
        "clientState": "cs-123",
    }


def test_create_subscription_omits_lifecycle_url_when_none() -> None:
    rec = Recorder(httpx.Response(201, json={"id": "s"}))
    _client(rec).create_subscription("/groups", "https://h/n", None, "cs", datetime(2026, 1, 1))
    body = json.loads(rec.requests[0].content)
    assert "lifecycleNotificationUrl" not in body
    assert body["expirationDateTime"] == "2026-01-01T00:00:00.000000Z"


def test_renew_reauthorize_delete_and_list_subscriptions() -> None:
    rec = Recorder(
        httpx.Response(200, json={"id": "s1", "expirationDateTime": "2026-01-02T00:00:00Z"}),
        httpx.Response(204),
        httpx.Response(204),
        _graph_error(404, "ResourceNotFound"),
        httpx.Response(200, json={"value": [{"id": "s1"}], "@odata.nextLink": f"{BASE}/subscriptions?$skip=1"}),
        httpx.Response(200, json={"value": [{"id": "s2"}]}),
    )
    client = _client(rec)
    assert client.renew_subscription("s1", datetime(2026, 1, 2, tzinfo=UTC))["id"] == "s1"
    client.reauthorize_subscription("s1")
    client.delete_subscription("s1")
    client.delete_subscription("gone")  # already deleted: not an error
    assert client.list_subscriptions() == [{"id": "s1"}, {"id": "s2"}]
    assert [(r.method, r.url.path) for r in rec.requests[:4]] == [
        ("PATCH", "/v1.0/subscriptions/s1"),
        ("POST", "/v1.0/subscriptions/s1/reauthorize"),
        ("DELETE", "/v1.0/subscriptions/s1"),
        ("DELETE", "/v1.0/subscriptions/gone"),
    ]
    assert json.loads(rec.requests[0].content) == {"expirationDateTime": "2026-01-02T00:00:00.000000Z"}


def test_a_missing_subscription_on_renew_is_not_found() -> None:
    with pytest.raises(NotFound):
        _client(Recorder(_graph_error(404, "ResourceNotFound"))).renew_subscription("s", datetime(2026, 1, 1))


# --- construction: MSAL wiring and TLS ---------------------------------------------------------------------------
def test_msal_is_built_lazily_with_our_authority_cache_and_a_ca_pinned_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[dict[str, Any]] = []

    class RecordingApp(FakeTokens):
        def __init__(self, client_id: str, **kwargs: Any) -> None:
            super().__init__()
            built.append({"client_id": client_id, **kwargs})

    monkeypatch.setattr(graph_module.msal, "ConfidentialClientApplication", RecordingApp)
    ca = tmp_path / "ca.pem"
    ca.write_text("unused")
    client = GraphClient(
        _settings(ca_bundle=ca),
        http=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"id": "u"}))),
    )
    assert built == []  # nothing fetched at construction
    client.get_user("u")
    (kwargs,) = built
    assert kwargs["client_id"] == "app-id"
    assert kwargs["client_credential"] == SECRET
    assert kwargs["authority"] == f"https://login.test/{TENANT}"
    assert kwargs["instance_discovery"] is False
    assert isinstance(kwargs["token_cache"], msal.SerializableTokenCache)
    session = kwargs["http_client"]
    assert session.trust_env is False and session.verify == str(ca)
    client.close()


def test_requires_graph_settings() -> None:
    with pytest.raises(ValueError, match="IDSYNC_GRAPH"):
        GraphClient(load_settings(_env_file=None))


@pytest.fixture
def https_graph(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTPS endpoint with a private CA: answers every GET with a small user."""
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"id": "u1", "auth": self.headers.get("Authorization")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1.0", ca_path
    finally:
        server.shutdown()
        server.server_close()


def test_the_default_http_client_verifies_against_the_configured_ca_whatever_the_environment_says(
    https_graph: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, ca_path = https_graph
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(var, str(tmp_path / "bogus.pem"))
    client = GraphClient(_settings(graph_url=url, ca_bundle=ca_path), token_source=FakeTokens())
    assert client.get_user("u1") == {"id": "u1", "auth": "Bearer token-0"}
    client.close()

    untrusting = GraphClient(_settings(graph_url=url), token_source=FakeTokens())  # system CAs only
    with pytest.raises(TransportError):
        untrusting.get_user("u1")
    untrusting.close()
