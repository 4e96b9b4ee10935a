"""The Microsoft identity platform's v2.0 endpoints, as far as an app-only (client credentials) client needs them.

MSAL runs OIDC discovery before every first token request and sends the secret in HTTP Basic auth with
quote_plus-encoded parts (MSAL Python's `oauth2cli`), so both are reproduced exactly; errors carry AADSTS codes in
Entra's OAuth2 error shape because the product logs and branches on them.
"""

from __future__ import annotations

import base64
import hmac
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
_ISSUER_LOCK = threading.Lock()


@dataclass
class Issuer:
    """The tenant's token signing key; one per sandbox, so tokens from another sandbox never validate."""

    key: rsa.RSAPrivateKey
    kid: str

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "x5t": self.kid, "use": "sig", "alg": "RS256"})
        return jwk


def issuer_for(state: Any) -> Issuer:
    found = state.__dict__.get("_graph_issuer")
    if found is not None:
        return found
    with _ISSUER_LOCK:
        found = state.__dict__.get("_graph_issuer")
        if found is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - x5t is a SHA-1 thumbprint by definition
            digest.update(der)
            kid = base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()
            found = Issuer(key=key, kid=kid)
            state.__dict__["_graph_issuer"] = found
    return found


def issue_token(state: Any, *, roles: list[str] | None = None, lifetime_s: int | None = None) -> tuple[str, int]:
    """A v1-format Graph app-only access token on the sandbox clock; returns (jwt, expires_in)."""
    creds = state.creds
    lifetime = int(lifetime_s if lifetime_s is not None else state.config.get("graph.token_lifetime_s", 3599))
    now = int(state.clock.time())
    claims = {
        "aud": GRAPH_AUDIENCE,
        "iss": f"https://sts.windows.net/{creds.tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": creds.graph_client_id,
        "appidacr": "1",
        "idp": f"https://sts.windows.net/{creds.tenant_id}/",
        "idtyp": "app",
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{creds.graph_client_id}")),
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{creds.graph_client_id}")),
        "roles": list(creds.graph_roles if roles is None else roles),
        "tid": creds.tenant_id,
        "ver": "1.0",
        "uti": base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode(),
    }
    iss = issuer_for(state)
    token = jwt.encode(claims, iss.key, algorithm="RS256", headers={"kid": iss.kid, "x5t": iss.kid, "typ": "JWT"})
    return token, lifetime


def _entra_error(state: Any, status: int, error: str, aadsts: int, description: str) -> JSONResponse:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    ts = state.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": (
                f"AADSTS{aadsts}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
            ),
            "error_codes": [aadsts],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"{state.base_url}/error?code={aadsts}",
        },
        status_code=status,
    )


def _known_tenant(state: Any, tenant: str) -> bool:
    domain = getattr(state.directory, "tenant_domain", None)
    return tenant.lower() in {state.creds.tenant_id.lower(), str(domain or "").lower()}


def install_identity(state: Any) -> list[BaseRoute]:
    def log(request: Request, status: int) -> None:
        state.activity.add("graph_request", method=request.method, path=request.url.path, status=status)

    async def openid_configuration(request: Request) -> JSONResponse:
        tenant = request.path_params["tenant"]
        if not _known_tenant(state, tenant):
            log(request, 400)
            return _entra_error(
                state, 400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the "
                "correct tenant ID and are signing into the correct cloud."
            )
        base, tid = state.base_url, state.creds.tenant_id
        doc = {
            "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "roles", "appid", "oid", "idtyp"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }
        log(request, 200)
        return JSONResponse(doc)

    async def keys(request: Request) -> JSONResponse:
        if not _known_tenant(state, request.path_params["tenant"]):
            return _entra_error(state, 400, "invalid_tenant", 90002, "Tenant not found.")
        return JSONResponse({"keys": [issuer_for(state).public_jwk]})

    async def token(request: Request) -> JSONResponse:
        response = await _token(request)
        log(request, response.status_code)
        return response

    async def _token(request: Request) -> JSONResponse:
        tenant = request.path_params["tenant"]
        if not _known_tenant(state, tenant):
            return _entra_error(state, 400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
                b_id, _, b_secret = raw.partition(":")
            except ValueError:
                return _entra_error(state, 401, "invalid_client", 7000216, "Malformed client credentials.")
            client_id, secret = unquote_plus(b_id), unquote_plus(b_secret)
        grant = fields.get("grant_type")
        if not grant:
            return _entra_error(
                state, 400, "invalid_request", 900144, "The request body must contain the following parameter: "
                "'grant_type'."
            )
        if grant != "client_credentials":
            return _entra_error(
                state, 400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
            )
        if not client_id:
            return _entra_error(
                state, 400, "invalid_request", 900144, "The request body must contain the following parameter: "
                "'client_id'."
            )
        if client_id != state.creds.graph_client_id:
            return _entra_error(
                state, 400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found "
                f"in the directory '{state.creds.tenant_id}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the tenant. You may "
                "have sent your authentication request to the wrong tenant."
            )
        if fields.get("client_assertion"):
            return _entra_error(
                state, 401, "invalid_client", 700027, "Client assertion failed signature validation."
            )
        if not secret:
            return _entra_error(
                state, 401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'."
            )
        if not hmac.compare_digest(secret.encode(), state.creds.graph_client_secret.encode()):
            return _entra_error(
                state, 401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent "
                f"in the request is the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'."
            )
        scopes = fields.get("scope", "").split()
        oidc = ("openid", "profile", "offline_access")
        if not scopes or any(not s.endswith("/.default") for s in scopes if s not in oidc):
            return _entra_error(
                state, 400, "invalid_scope", 1002012, f"The provided value for scope {fields.get('scope', '')} is not "
                "valid. Client credential flows must have a scope value with /.default suffixed to the resource "
                "identifier (application ID URI)."
            )
        resources = {s[: -len("/.default")].rstrip("/") for s in scopes if s.endswith("/.default")}
        if not resources <= {GRAPH_AUDIENCE, GRAPH_APP_ID}:
            return _entra_error(
                state, 400, "invalid_resource", 500011, f"The resource principal named {sorted(resources)[0]} was "
                f"not found in the tenant named {state.creds.tenant_id}."
            )
        access, lifetime = issue_token(state)
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access},
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
        Route("/{tenant}/discovery/keys", keys, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    ]
