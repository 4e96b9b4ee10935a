"""Bearer-token checks for Graph routes.

Graph rejects a token it did not issue, an expired one (judged on the sandbox clock, so tests can age tokens) or
one for another tenant with 401 `InvalidAuthenticationToken`, and a valid token lacking the needed app role with
403 `Authorization_RequestDenied` - the product must handle both differently (refresh vs. configuration error).
"""

from __future__ import annotations

from typing import Any

import jwt

from sandbox.graph.errors import GraphError
from sandbox.graph.identity import GRAPH_APP_ID, GRAPH_AUDIENCE, issuer_for


def _bearer(request: Any) -> str:
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    return token.strip()


def validate_token(state: Any, token: str) -> dict[str, Any]:
    """Signature, audience, issuer/tenant and lifetime checks; returns the claims."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            issuer_for(state).key.public_key(),
            algorithms=["RS256"],
            audience=[GRAPH_AUDIENCE, GRAPH_APP_ID],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp", "tid"]},
        )
    except jwt.InvalidAudienceError as exc:
        raise GraphError(
            401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."
        ) from exc
    except jwt.PyJWTError as exc:
        raise GraphError(
            401, "InvalidAuthenticationToken", "Access token validation failure. Invalid signature or malformed token."
        ) from exc
    if claims.get("tid") != state.creds.tenant_id or claims.get("iss") != f"https://sts.windows.net/{state.creds.tenant_id}/":
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid issuer.")
    now = state.clock.time()
    if now >= float(claims["exp"]):  # no skew allowance: the sandbox clock is the only clock
        raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
    if now + 300 < float(claims.get("nbf", 0)):
        raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is not yet valid.")
    return claims


def authorize(request: Any, state: Any, *roles_any: str) -> dict[str, Any]:
    """Validate the request's bearer token and require one of `roles_any` among its app roles.

    The claims are also left on `request.state.graph_claims` so throttling can meter per app.
    """
    claims = validate_token(state, _bearer(request))
    req_state = getattr(request, "state", None)
    if req_state is not None:
        req_state.graph_claims = claims
    roles = set(claims.get("roles") or [])
    if roles_any and not roles.intersection(roles_any):
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    return claims
