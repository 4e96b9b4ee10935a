"""The Salesforce client against a tiny HTTPS org started in the test (trustme CA + http.server in a thread).

simple-salesforce always speaks https, so the fake org does too; that also lets us prove the configured CA, not
the environment's, decides what is trusted.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import pytest
import trustme

from ops.embedded_redis import free_port
from shared.errors import (
    AuthenticationFailed,
    NotFound,
    PermanentError,
    RetryableError,
    SalesforceDailyLimitExceeded,
    SalesforceThrottled,
    TransportError,
)
from shared.limiter import Limiter
from shared.salesforce_client import SalesforceClient, parse_api_usage
from shared.settings import Settings, load_settings

SECRET = "sf-secret-value"
API = "/services/data/v62.0"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


Reply = tuple[int, Any]  # (status, JSON body or None)


@dataclass
class FakeOrg:
    """Scripted responses per (method, path prefix); the last scripted reply for a route repeats."""

    url: str = ""
    ca_path: Path = Path()
    calls: list[Call] = field(default_factory=list)
    script: dict[tuple[str, str], list[Reply | Callable[[Call], Reply]]] = field(default_factory=dict)
    tokens_issued: int = 0
    api_calls: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    slow_paths: set[str] = field(default_factory=set)

    def on(self, method: str, path: str, *replies: Reply | Callable[[Call], Reply]) -> None:
        self.script[(method, path)] = list(replies)

    def api(self) -> list[Call]:
        return [c for c in self.calls if c.path.startswith(API)]

    def token_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path == "/services/oauth2/token"]

    def reply(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        if call.path == "/services/oauth2/token" and ("POST", call.path) not in self.script:
            self.tokens_issued += 1
            return (
                200,
                {"access_token": f"tok-{self.tokens_issued}", "instance_url": self.url, "token_type": "Bearer"},
                {},
            )
        if any(call.path.startswith(p) for p in self.slow_paths):
            self.release.wait(5)
        matches = [k for k in self.script if k[0] == call.method and call.path.startswith(k[1])]
        if not matches:
            status, body = 404, [{"errorCode": "NOT_FOUND", "message": f"no route {call.method} {call.path}"}]
        else:
            replies = self.script[max(matches, key=lambda k: len(k[1]))]
            item = replies.pop(0) if len(replies) > 1 else replies[0]
            status, body = item(call) if callable(item) else item
        headers: dict[str, str] = {}
        if call.path.startswith(API):
            self.api_calls += 1
            headers["Sforce-Limit-Info"] = f"api-usage={self.api_calls}/15000; per-app-api-usage=1/250(appName=x)"
        return status, body, headers


@pytest.fixture
def org(tmp_path: Path) -> Iterator[FakeOrg]:
    ca = trustme.CA()
    fake = FakeOrg(ca_path=tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(str(fake.ca_path))

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode()
            call = Call(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
            fake.calls.append(call)
            status, payload, headers = fake.reply(call)
            data = b"" if payload is None else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client gave up (timeout test)

        do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    fake.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


def _settings(org: FakeOrg | None, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "sf_url": org.url if org else "https://127.0.0.1:1",
        "sf_client_id": "cid",
        "sf_client_secret": SECRET,
        "ca_bundle": org.ca_path if org else None,
        "sf_timeout_s": 5.0,
    }
    base.update(overrides)
    return load_settings(_env_file=None, **base)


def _client(org: FakeOrg, limiter: Limiter | None = None, lane: str = "sync", **overrides: object) -> SalesforceClient:
    return SalesforceClient(
        _settings(org, **overrides), limiter=limiter, lane=lane, sleep=lambda s: pytest.fail(f"unexpected sleep {s}")
    )


def _records(*records: dict[str, Any]) -> Reply:
    return 200, {"totalSize": len(records), "done": True, "records": list(records)}


def _error(status: int, code: str, message: str, fields: list[str] | None = None) -> Reply:
    return status, [{"errorCode": code, "message": message, "fields": fields or []}]


# --- token and session -------------------------------------------------------------------------------------------
def test_token_is_fetched_by_client_credentials_with_basic_auth_and_used_as_bearer(org: FakeOrg) -> None:
    org.on("GET", f"{API}/query", _records({"Id": "005A"}))
    assert _client(org).query_all("SELECT Id FROM User") == [{"Id": "005A"}]
    (token_call,) = org.token_calls()
    assert token_call.method == "POST"
    assert token_call.headers["Authorization"] == "Basic " + base64.b64encode(f"cid:{SECRET}".encode()).decode()
    assert token_call.body == "grant_type=client_credentials"
    (api_call,) = org.api()
    assert api_call.headers["Authorization"] == "Bearer tok-1"
    assert api_call.query["q"] == ["SELECT Id FROM User"]


def test_an_expired_session_gets_one_new_token_and_one_retry(org: FakeOrg) -> None:
    org.on(
        "GET", f"{API}/query", _error(401, "INVALID_SESSION_ID", "Session expired or invalid"), _records({"Id": "005A"})
    )
    assert _client(org).query_all("SELECT Id FROM User") == [{"Id": "005A"}]
    assert len(org.token_calls()) == 2
    assert [c.headers["Authorization"] for c in org.api()] == ["Bearer tok-1", "Bearer tok-2"]


@pytest.mark.parametrize("operation", ["query", "update"])
def test_a_session_rejected_again_after_refresh_fails_instead_of_looping(org: FakeOrg, operation: str) -> None:
    org.on("GET", f"{API}/query", _error(401, "INVALID_SESSION_ID", "Session expired or invalid"))
    org.on("PATCH", f"{API}/sobjects/User", _error(401, "INVALID_SESSION_ID", "Session expired or invalid"))
    client = _client(org)
    with pytest.raises(AuthenticationFailed) as caught:
        if operation == "query":
            client.query_all("SELECT Id FROM User")
        else:
            client.deactivate_user("005A")
    assert caught.value.code == "INVALID_SESSION_ID"
    assert len(org.api()) == 2
    assert len(org.token_calls()) == 2


def test_a_refused_client_credentials_request_is_permanent_and_hides_the_secret(org: FakeOrg) -> None:
    org.on("POST", "/services/oauth2/token", (400, {"error": "invalid_client", "error_description": SECRET}))
    with pytest.raises(AuthenticationFailed) as caught:
        _client(org).query_all("SELECT Id FROM User")
    assert caught.value.code == "invalid_client" and caught.value.status == 400
    assert SECRET not in str(caught.value)
    assert org.api() == []


def test_a_failing_token_endpoint_is_retryable(org: FakeOrg) -> None:
    org.on("POST", "/services/oauth2/token", (503, None))
    with pytest.raises(RetryableError):
        _client(org).query_all("SELECT Id FROM User")


# --- error mapping -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        _error(503, "SERVER_UNAVAILABLE", "Server busy"),
        _error(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records: 005A"),
        (500, "<html>oops</html>"),
    ],
)
def test_transient_salesforce_failures_raise_retryable_errors(org: FakeOrg, reply: Reply) -> None:
    org.on("PATCH", f"{API}/sobjects/User/005A", reply)
    with pytest.raises(RetryableError) as caught:
        _client(org).deactivate_user("005A")
    assert caught.value.service == "salesforce" and caught.value.status == reply[0]


def test_validation_errors_raise_permanent_errors_with_code_and_message(org: FakeOrg) -> None:
    org.on(
        "PATCH",
        f"{API}/sobjects/User/005A",
        _error(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"]),
    )
    with pytest.raises(PermanentError) as caught:
        _client(org).update_record("User", "005A", {"LastName": None})
    err = caught.value
    assert (err.status, err.code, err.message) == (
        400,
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [LastName]",
    )
    assert not isinstance(err, RetryableError)


def test_the_daily_api_limit_is_parked_for_an_hour_not_dead_lettered(org: FakeOrg) -> None:
    org.on("GET", f"{API}/query", _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
    with pytest.raises(SalesforceDailyLimitExceeded) as caught:
        _client(org).query_all("SELECT Id FROM User")
    assert caught.value.retry_after == 3600


def test_a_missing_record_is_not_found(org: FakeOrg) -> None:
    org.on("PATCH", f"{API}/sobjects/User/005X", _error(404, "NOT_FOUND", "The requested resource does not exist"))
    with pytest.raises(NotFound):
        _client(org).deactivate_user("005X")


# --- transport: timeouts, connection, CA -------------------------------------------------------------------------
def test_requests_time_out_after_the_configured_timeout(org: FakeOrg) -> None:
    org.slow_paths.add(f"{API}/sobjects")
    org.on("PATCH", f"{API}/sobjects/User/005A", (204, None))
    # no call site passes a timeout (simple-salesforce has none): the mounted adapter supplies sf_timeout_s
    with pytest.raises(TransportError) as caught:
        _client(org, sf_timeout_s=0.2).deactivate_user("005A")
    assert caught.value.code == "timeout"
    assert isinstance(caught.value, RetryableError)


def test_a_refused_connection_is_a_retryable_transport_error(tmp_path: Path) -> None:
    settings = _settings(None, sf_url=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError) as caught:
        SalesforceClient(settings).query_all("SELECT Id FROM User")
    assert caught.value.code == "connection"


def test_the_configured_ca_is_used_even_when_requests_ca_bundle_points_elsewhere(
    org: FakeOrg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(var, str(tmp_path / "bogus-ca.pem"))
    org.on("GET", f"{API}/query", _records({"Id": "005A"}))
    assert _client(org).query_all("SELECT Id FROM User") == [{"Id": "005A"}]

    # And verification is real: without our CA the same org is refused.
    untrusting = SalesforceClient(_settings(org, ca_bundle=None))
    with pytest.raises(TransportError) as caught:
        untrusting.query_all("SELECT Id FROM User")
    assert caught.value.code == "tls"


# --- usage and limiter -------------------------------------------------------------------------------------------
def test_sforce_limit_info_is_recorded_from_every_response_including_errors(org: FakeOrg) -> None:
    limiter = Limiter(fakeredis.FakeRedis(decode_responses=True), _settings(org))
    org.on("GET", f"{API}/query", _records())
    org.on("PATCH", f"{API}/sobjects/User/005A", _error(400, "FIELD_INTEGRITY_EXCEPTION", "no"))
    client = _client(org, limiter=limiter)
    client.query_all("SELECT Id FROM User")
    assert limiter.sf_usage() == (1, 15000)
    with pytest.raises(PermanentError):
        client.deactivate_user("005A")
    assert limiter.sf_usage() == (2, 15000)


def test_parse_api_usage_reads_the_org_figure_not_the_per_app_one() -> None:
    assert parse_api_usage("api-usage=18/5000; per-app-api-usage=17/250(appName=x)") == (18, 5000)
    assert parse_api_usage("per-app-api-usage=17/250(appName=x)") is None
    assert parse_api_usage(None) is None


def test_sync_calls_stop_near_the_daily_limit_while_revocations_go_through(org: FakeOrg) -> None:
    limiter = Limiter(fakeredis.FakeRedis(decode_responses=True), _settings(org))
    limiter.record_sf_usage(14000, 15000)
    org.on("PATCH", f"{API}/sobjects/User/005A", (204, None))
    with pytest.raises(SalesforceThrottled) as caught:
        _client(org, limiter=limiter, lane="sync").activate_user("005A")
    assert caught.value.retry_after and caught.value.retry_after > 60
    assert org.calls == []
    _client(org, limiter=limiter, lane="revocation").deactivate_user("005A")
    assert [c.body for c in org.api()] == [{"IsActive": False}]


# --- operations --------------------------------------------------------------------------------------------------
def test_query_all_follows_next_records_url(org: FakeOrg) -> None:
    org.on("GET", f"{API}/query/01g-2", _records({"Id": "3"}))
    org.on(
        "GET",
        f"{API}/query",
        (
            200,
            {
                "totalSize": 3,
                "done": False,
                "nextRecordsUrl": f"{API}/query/01g-2",
                "records": [{"Id": "1"}, {"Id": "2"}],
            },
        ),
    )
    assert [r["Id"] for r in _client(org).query_all("SELECT Id FROM User")] == ["1", "2", "3"]
    assert len(org.api()) == 2


def test_find_user_prefers_federation_identifier_and_quotes_values(org: FakeOrg) -> None:
    org.on(
        "GET",
        f"{API}/query",
        _records(
            {"Id": "005E", "FederationIdentifier": "entra-1"}, {"Id": "005F", "FederationIdentifier": "o'neil@x.test"}
        ),
    )
    found = _client(org).find_user("entra-1", "o'neil@x.test", "ann@x.test")
    assert found is not None and found["Id"] == "005F"  # the explicit federation id wins over the object id
    (call,) = org.api()
    soql = call.query["q"][0]
    assert soql.startswith("SELECT Id, Username, IsActive, FederationIdentifier, Email, ProfileId FROM User")
    assert "FederationIdentifier IN ('o\\'neil@x.test','entra-1')" in soql


def test_find_user_matches_federation_id_or_username_in_one_query_then_gives_none(org: FakeOrg) -> None:
    org.on("GET", f"{API}/query", _records({"Id": "005U", "Username": "ann@x.test"}), _records())
    client = _client(org)
    assert client.find_user("entra-1", None, "ann@x.test") == {"Id": "005U", "Username": "ann@x.test"}
    soql = org.api()[0].query["q"][0]
    assert "FederationIdentifier IN ('entra-1') OR Username = 'ann@x.test'" in soql
    assert client.find_user(None, None, "nobody@x.test") is None
    assert client.find_user(None, None, None) is None
    assert len(org.api()) == 2  # one query per lookup; none at all without anything to match on


def test_freeze_user_patches_the_user_login_and_is_a_no_op_when_already_frozen(org: FakeOrg) -> None:
    org.on(
        "GET",
        f"{API}/query",
        _records({"Id": "0Yw1", "UserId": "005A", "IsFrozen": False}),
        _records({"Id": "0Yw1", "UserId": "005A", "IsFrozen": True}),
    )
    org.on("PATCH", f"{API}/sobjects/UserLogin/0Yw1", (204, None))
    client = _client(org)
    client.freeze_user("005A")
    client.freeze_user("005A")
    patches = [c for c in org.api() if c.method == "PATCH"]
    assert [(c.path, c.body) for c in patches] == [(f"{API}/sobjects/UserLogin/0Yw1", {"IsFrozen": True})]
    assert "FROM UserLogin WHERE UserId = '005A'" in org.api()[0].query["q"][0]


def test_unfreeze_user_clears_the_flag_and_a_user_without_login_is_not_found(org: FakeOrg) -> None:
    org.on("GET", f"{API}/query", _records({"Id": "0Yw1", "UserId": "005A", "IsFrozen": True}), _records())
    org.on("PATCH", f"{API}/sobjects/UserLogin/0Yw1", (204, None))
    client = _client(org)
    client.unfreeze_user("005A")
    assert org.api()[-1].body == {"IsFrozen": False}
    with pytest.raises(NotFound):
        client.freeze_user("005Z")


def test_deactivate_and_activate_patch_is_active(org: FakeOrg) -> None:
    org.on("PATCH", f"{API}/sobjects/User/005A", (204, None))
    client = _client(org)
    client.deactivate_user("005A")
    client.activate_user("005A")
    assert [(c.method, c.path, c.body) for c in org.api()] == [
        ("PATCH", f"{API}/sobjects/User/005A", {"IsActive": False}),
        ("PATCH", f"{API}/sobjects/User/005A", {"IsActive": True}),
    ]


def test_composite_posts_subrequests_and_returns_the_composite_response(org: FakeOrg) -> None:
    results = [{"body": None, "httpStatusCode": 204, "referenceId": "r1"}]
    org.on("POST", f"{API}/composite", (200, {"compositeResponse": results}))
    subrequests = [
        {"method": "PATCH", "url": f"{API}/sobjects/User/005A", "referenceId": "r1", "body": {"IsActive": False}}
    ]
    assert _client(org).composite(subrequests) == results
    assert org.api()[0].body == {"allOrNone": True, "compositeRequest": subrequests}


def test_collections_update_chunks_by_200_and_returns_results_in_order(org: FakeOrg) -> None:
    org.on(
        "PATCH",
        f"{API}/composite/sobjects",
        lambda call: (200, [{"id": r["id"], "success": True, "errors": []} for r in call.body["records"]]),
    )
    records = [{"attributes": {"type": "Opportunity"}, "id": f"006{i:05d}", "OwnerId": "005B"} for i in range(450)]
    results = _client(org).collections_update(records)
    assert [r["id"] for r in results] == [r["id"] for r in records]
    assert [len(c.body["records"]) for c in org.api()] == [200, 200, 50]
    assert all(c.body["allOrNone"] is False for c in org.api())


def test_collections_update_refuses_records_without_type_or_id(org: FakeOrg) -> None:
    client = _client(org)
    with pytest.raises(ValueError, match="attributes.type"):
        client.collections_update([{"id": "006A", "OwnerId": "005B"}])
    with pytest.raises(ValueError, match="id"):
        client.collections_update([{"attributes": {"type": "Lead"}, "OwnerId": "005B"}])
    assert org.calls == []


def test_requires_salesforce_settings() -> None:
    with pytest.raises(ValueError, match="IDSYNC_SF"):
        SalesforceClient(load_settings(_env_file=None))
