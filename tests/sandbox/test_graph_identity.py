"""Identity platform + Graph auth/throttling over real HTTPS, through the clients the product uses (msal, httpx)."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import httpx
import msal
import pytest
import requests

from sandbox.graph import throttle
from sandbox.graph.identity import issue_token
from sandbox.server import SandboxServer


def _msal_app(sandbox: SandboxServer, secret: str) -> msal.ConfidentialClientApplication:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(sandbox.state.ca_path)
    c = sandbox.state.creds
    return msal.ConfidentialClientApplication(
        c.graph_client_id,
        client_credential=secret,
        authority=f"{sandbox.base_url}/{c.tenant_id}",
        instance_discovery=False,
        http_client=session,
    )


def test_msal_acquires_an_app_token_that_graph_accepts(sandbox: SandboxServer, http: httpx.Client) -> None:
    app = _msal_app(sandbox, sandbox.state.creds.graph_client_secret)
    result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    r = http.get("/v1.0/users?$top=3", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert r.status_code == 200
    assert len(r.json()["value"]) == 3
    assert int(r.headers["x-ms-resource-unit"]) >= 1


def test_a_wrong_client_secret_is_invalid_client_aadsts7000215(sandbox: SandboxServer) -> None:
    result = _msal_app(sandbox, "not-the-secret").acquire_token_for_client(
        scopes=["https://graph.microsoft.com/.default"]
    )
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(result)


def test_an_unknown_client_id_is_aadsts700016_with_status_400(sandbox: SandboxServer, http: httpx.Client) -> None:
    c = sandbox.state.creds
    r = http.post(
        f"/{c.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "nobody",
            "client_secret": "x",
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    assert r.status_code == 400
    assert r.json()["error_codes"] == [700016]


def test_basic_auth_credentials_are_quote_plus_decoded_like_msal_sends_them(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    c = sandbox.state.creds
    raw = f"{quote_plus(c.graph_client_id)}:{quote_plus(c.graph_client_secret)}".encode()
    r = http.post(
        f"/{c.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": c.graph_client_id,
            "client_info": "1",
            "scope": "https://graph.microsoft.com/.default",
        },
        headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["expires_in"] == body["ext_expires_in"] == sandbox.state.config.get("graph.token_lifetime_s")


def test_an_unsupported_grant_type_and_a_scope_without_default_are_rejected(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    c = sandbox.state.creds
    url = f"/{c.tenant_id}/oauth2/v2.0/token"
    base = {"client_id": c.graph_client_id, "client_secret": c.graph_client_secret}
    r = http.post(url, data={**base, "grant_type": "password", "scope": "https://graph.microsoft.com/.default"})
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
    r = http.post(url, data={**base, "grant_type": "client_credentials", "scope": "User.Read.All"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_scope")


def test_discovery_for_an_unknown_tenant_is_an_entra_shaped_400(http: httpx.Client) -> None:
    r = http.get("/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert r.status_code == 400
    assert r.json()["error_codes"] == [90002]


def test_a_token_without_a_read_role_gets_403_authorization_request_denied(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token, _ = issue_token(sandbox.state, roles=["Mail.Send"])
    r = http.get("/v1.0/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "Authorization_RequestDenied"
    assert err["message"] == "Insufficient privileges to complete the operation."


def test_an_expired_or_missing_token_is_401_invalid_authentication_token(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token, _ = issue_token(sandbox.state, lifetime_s=-60)
    r = http.get("/v1.0/users", headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")
    r = http.get("/v1.0/users")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")


@pytest.fixture
def tiny_budget(sandbox: SandboxServer):
    state = sandbox.state
    old = state.config.get("graph.ru_per_10s")
    throttle.reset(state)
    state.config.set("graph.ru_per_10s", 4)
    try:
        yield state
    finally:
        state.config.set("graph.ru_per_10s", old)
        throttle.reset(state)


def test_exhausting_the_resource_unit_budget_gives_429_with_integer_retry_after(
    tiny_budget: object, sandbox: SandboxServer, http: httpx.Client
) -> None:
    token, _ = issue_token(sandbox.state)
    headers = {"Authorization": f"Bearer {token}"}
    statuses = [http.get("/v1.0/users", headers=headers) for _ in range(4)]
    throttled = [r for r in statuses if r.status_code == 429]
    assert statuses[0].status_code == 200
    assert throttled, [r.status_code for r in statuses]
    r = throttled[0]
    assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
    c = sandbox.state.creds
    assert r.headers["x-ms-throttle-scope"] == f"Tenant_Application/Read/{c.graph_client_id}/{c.tenant_id}"
    assert r.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    err = r.json()["error"]
    assert (err["code"], err["message"]) == ("TooManyRequests", "Please retry again later.")
    assert err["innerError"]["code"] == "429" and err["innerError"]["status"] == "429"
    assert err["innerError"]["message"] == "Please retry after"
    # 2 RU of 4 used: no warning; 4 of 4: above the 80% mark the percentage header appears
    assert "x-ms-throttle-limit-percentage" not in statuses[0].headers
    assert statuses[1].headers["x-ms-throttle-limit-percentage"] == "1.0"
