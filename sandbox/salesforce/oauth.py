"""`POST /services/oauth2/token` (client credentials, JWT bearer) and `POST /services/oauth2/revoke`.

The connected app: `state.creds.sf_client_id` / `sf_client_secret`, run-as user = `org.integration_user_id` (set
by the seed). For the JWT bearer flow the app holds a certificate: `prepare_connected_app` writes an RSA key pair to
`<state_dir>/salesforce/connected_app_private_key.pem` and `..._public_key.pem` (kept across restarts of the same
state dir) and the org accepts assertions signed by that private key. `aud` may be the base URL (My Domain),
https://login.salesforce.com or https://test.salesforce.com; `exp` is judged on the sandbox clock with 3 minutes of
skew, like Salesforce.

Error bodies are those Salesforce orgs answer (HTTP 400): wrong client id -> invalid_client_id "client identifier
invalid"; wrong secret -> invalid_client "invalid client credentials"; bad signature or malformed assertion ->
invalid_grant "invalid assertion"; expired -> invalid_grant "expired authorization code"; bad audience ->
invalid_grant "audience is invalid"; unknown user -> invalid_grant "user hasn't approved this consumer"; inactive
user -> invalid_grant "inactive user"; frozen or password-locked user -> invalid_grant "user is locked".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOCK_SKEW_S = 180


def key_paths(state: Any) -> tuple[Path, Path]:
    base = Path(state.state_dir) / "salesforce"
    return base / "connected_app_private_key.pem", base / "connected_app_public_key.pem"


def prepare_connected_app(state: Any) -> None:
    """Create (once per state dir) the connected app's key pair and register the public key with the org."""
    priv_path, pub_path = key_paths(state)
    if not (priv_path.exists() and pub_path.exists()):
        priv_path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        priv_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        priv_path.chmod(0o600)
        pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    state.org.jwt_public_key_pem = pub_path.read_bytes()


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class _OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


def _client_credentials(request: Request, form: Any) -> tuple[str, str]:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise _OAuthError("invalid_client", "invalid client credentials") from None
        return cid, secret
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))


def _check_user(state: Any, user: dict[str, Any] | None) -> dict[str, Any]:
    org = state.org
    if user is None:
        raise _OAuthError("invalid_grant", "user hasn't approved this consumer")
    if not user["IsActive"]:
        raise _OAuthError("invalid_grant", "inactive user")
    login = org.live["UserLogin"].get(org.user_login.get(user["Id"], ""))
    if login and (login["IsFrozen"] or login["IsPasswordLocked"]):
        raise _OAuthError("invalid_grant", "user is locked")
    return user


def _jwt_user(state: Any, assertion: str) -> dict[str, Any]:
    org = state.org
    try:
        claims = jwt.decode(
            assertion,
            org.jwt_public_key_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidTokenError:
        raise _OAuthError("invalid_grant", "invalid assertion") from None
    if claims.get("iss") != state.creds.sf_client_id:
        raise _OAuthError("invalid_client_id", "client identifier invalid")
    base = state.base_url.rstrip("/")
    auds = claims.get("aud")
    auds = auds if isinstance(auds, list) else [auds]
    allowed = {base, "https://login.salesforce.com", "https://test.salesforce.com"}
    if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in auds):
        raise _OAuthError("invalid_grant", "audience is invalid")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp + CLOCK_SKEW_S < state.clock.time():
        raise _OAuthError("invalid_grant", "expired authorization code")
    sub = str(claims.get("sub", ""))
    with state.lock:
        uid = org.unique[("User", "Username")].get(sub.lower())
        user = org.live["User"].get(uid or "")
        return _check_user(state, user)


def oauth_routes(state: Any) -> list[BaseRoute]:
    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        grant = str(form.get("grant_type", ""))
        org = state.org
        try:
            if grant == "client_credentials":
                cid, secret = _client_credentials(request, form)
                if cid != state.creds.sf_client_id:
                    raise _OAuthError("invalid_client_id", "client identifier invalid")
                if not hmac.compare_digest(secret, state.creds.sf_client_secret):
                    raise _OAuthError("invalid_client", "invalid client credentials")
                with state.lock:
                    if org.integration_user_id is None:
                        raise _OAuthError("invalid_grant", "no client credentials user enabled")
                    user = _check_user(state, org.live["User"].get(org.integration_user_id))
            elif grant == JWT_GRANT:
                user = _jwt_user(state, str(form.get("assertion", "")))
            elif not grant:
                raise _OAuthError("unsupported_grant_type", "grant type not supported")
            else:
                raise _OAuthError("unsupported_grant_type", "grant type not supported")
        except _OAuthError as exc:
            state.activity.add("sf_token", grant=grant, status=400, error=exc.error)
            return _oauth_error(exc.error, exc.description)
        session = org.issue_session(user["Id"])
        base = state.base_url.rstrip("/")
        ident = f"{base}/id/{org.org_id}/{user['Id']}"
        issued = str(int(session.issued_at * 1000))
        sig = base64.b64encode(
            hmac.new(state.creds.sf_client_secret.encode(), (ident + issued).encode(), hashlib.sha256).digest()
        ).decode()
        state.activity.add("sf_token", grant=grant, status=200, user=user["Username"])
        return JSONResponse({
            "access_token": session.token,
            "signature": sig,
            "scope": "api",
            "instance_url": base,
            "api_instance_url": base,
            "id": ident,
            "token_type": "Bearer",
            "issued_at": issued,
        })

    async def revoke(request: Request) -> JSONResponse:
        """Token revocation: the session stops working at once (200 even for unknown tokens, like Salesforce)."""
        form = await request.form()
        tok = str(form.get("token", "")) or request.query_params.get("token", "")
        with state.lock:
            state.org.sessions.pop(tok, None)
        return JSONResponse({}, status_code=200)

    return [
        Route("/services/oauth2/token", token, methods=["POST"]),
        Route("/services/oauth2/revoke", revoke, methods=["POST"]),
    ]


def sign_assertion(state: Any, username: str, *, aud: str | None = None, exp_in_s: float = 180) -> str:
    """A JWT bearer assertion signed with the connected app's private key (tests and local tooling use it)."""
    priv_path, _ = key_paths(state)
    claims = {
        "iss": state.creds.sf_client_id,
        "sub": username,
        "aud": aud or state.base_url,
        "exp": int(state.clock.time() + exp_in_s),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, priv_path.read_bytes(), algorithm="RS256")
