"""`/v1.0/subscriptions`: create, list, read, renew, delete and reauthorize change-notification subscriptions.

Behaviour follows Microsoft's documentation (https://learn.microsoft.com/graph/api/subscription-post-subscriptions and
https://learn.microsoft.com/graph/change-notifications-delivery-webhooks) closely because the product's webhook
registration code is tested against it: the validation handshake (URL-decoded token, 10 s, text/plain), the
41,760-minute expiry limit, the per-app quota (403 naming the limit) and Graph's error shapes. One documented
relaxation: plain `http://` notification URLs are accepted for loopback hosts, so local receivers need no certificate.

The handshake's outbound POST runs without `state.lock` (it may take up to the validation timeout).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.graph.auth import authorize
from sandbox.graph.errors import GraphError, graph_error_response
from sandbox.graph.notifier import Notifier, notification_ssl_context
from sandbox.graph.subscription_store import (
    ALLOWED_CHANGE_TYPES,
    MAX_CLIENT_STATE,
    ResourceSpec,
    Subscription,
    SubscriptionStore,
    parse_datetime,
    parse_resource,
)
from sandbox.graph.throttle import charge

__all__ = ["install_subscriptions"]

_JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
_READ_ROLES = {
    "users": ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    "groups": ("Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
}
_MEMBER_ROLES = ("GroupMember.Read.All", "GroupMember.ReadWrite.All")
_VALIDATION_FAILED = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
)


def _invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def _not_found() -> GraphError:
    return GraphError(404, "ResourceNotFound", "The object was not found.")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_notification_url(url: Any, field_name: str) -> str:
    """HTTPS only, as Graph requires; plain http is the sandbox's relaxation for loopback receivers."""
    if not isinstance(url, str) or not url.strip():
        raise _invalid(f"'{field_name}' is required.")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _invalid(f"Invalid '{field_name}': '{url}' is not an absolute URL.")
    if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname):
        raise _invalid(f"Invalid '{field_name}': '{url}'. The notification URL must use the HTTPS protocol.")
    return url.strip()


def _check_expiration(state: Any, value: Any) -> float:
    """Future and at most `graph.subscription_max_minutes` ahead on the sandbox clock."""
    if value is None:
        raise _invalid("'expirationDateTime' is required.")
    expiration = parse_datetime(value)
    if expiration is None:
        raise _invalid(f"Invalid 'expirationDateTime': '{value}'.")
    now = state.clock.time()
    max_minutes = int(state.config.get("graph.subscription_max_minutes", 41760))
    if expiration <= now:
        raise _invalid("Subscription expiration date time cannot be in the past.")
    if expiration > now + max_minutes * 60:
        raise _invalid(f"Subscription expiration can only be {max_minutes} minutes in the future.")
    return expiration


def _check_change_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("'changeType' is required.")
    types: list[str] = []
    for raw in value.split(","):
        ct = raw.strip().lower()
        if ct not in ALLOWED_CHANGE_TYPES:
            raise _invalid(f"Invalid 'changeType' attribute: '{raw.strip()}'.")
        if ct not in types:
            types.append(ct)
    return tuple(types)


def _check_resource(value: Any) -> ResourceSpec:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("'resource' is required.")
    if value.strip().lower().startswith(("http://", "https://")):
        raise _invalid(f"Invalid 'resource': '{value}'. The resource must not include the service base URL.")
    spec = parse_resource(value)
    if spec is None:
        raise _invalid(f"Resource '{value}' is not supported for change notifications.")
    return spec


def _require_roles(claims: dict[str, Any], spec: ResourceSpec) -> None:
    wanted = set(_READ_ROLES[spec.kind])
    if spec.nav:
        wanted.update(_MEMBER_ROLES)
    if not wanted.intersection(claims.get("roles") or []):
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


async def validate_endpoint(state: Any, url: str) -> None:
    """Graph's validation handshake: POST ?validationToken=..., expect 200 text/plain echoing the decoded token.

    The token contains spaces and colons on purpose (as Graph's does), so an endpoint echoing the still-encoded
    query value fails exactly as it would against Microsoft.
    """
    token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
    target = url + ("&" if urlsplit(url).query else "?") + "validationToken=" + quote(token, safe="")
    timeout = float(state.config.get("graph.validation_timeout_s", 10.0))
    outcome: str
    status: int | None = None
    try:
        async with httpx.AsyncClient(
            verify=notification_ssl_context(state.notification_ca_path), trust_env=False, follow_redirects=False
        ) as client:
            resp = await asyncio.wait_for(
                client.post(
                    target, content=b"", headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=timeout
                ),
                timeout,
            )
        status = resp.status_code
        content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        ok = status == 200 and content_type == "text/plain" and resp.content == token.encode()
        outcome = "ok" if ok else "wrong_response"
    except (TimeoutError, httpx.TimeoutException):
        outcome = "timeout"
    except httpx.HTTPError:
        outcome = "unreachable"
    state.activity.add("subscription_validation", url=url, status=status, outcome=outcome, at=state.clock.iso())
    if outcome == "timeout":
        raise _invalid("Subscription validation request timed out.")
    if outcome != "ok":
        raise GraphError(400, "ValidationError", _VALIDATION_FAILED)


def install_subscriptions(state: Any) -> list[BaseRoute]:
    """Build the subscription routes and the notifier (left on `state.notifier`; the server starts it)."""
    store = SubscriptionStore()
    notifier = Notifier(state, store)
    state.notifier = notifier
    notifier.attach()

    def respond(body: Any, status: int, headers: dict[str, str]) -> Response:
        headers = {"request-id": str(uuid.uuid4()), **headers}
        if body is None:
            return Response(status_code=status, headers=headers)
        return Response(json.dumps(body), status_code=status, headers=headers, media_type=_JSON_TYPE)

    def context(suffix: str = "") -> str:
        return f"{state.base_url}/v1.0/$metadata#subscriptions{suffix}"

    def find(sub_id: str, claims: dict[str, Any]) -> Subscription:
        """Live subscription of the calling app (expired ones are gone even before the notifier sweeps them)."""
        sub = store.get(sub_id)
        if sub is None or sub.application_id != claims.get("appid"):
            raise _not_found()
        if sub.expiration <= state.clock.time():
            store.remove(sub.id)
            raise _not_found()
        return sub

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
        return body

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except GraphError as err:
                return graph_error_response(state, err, request.headers.get("client-request-id"))

        return endpoint

    async def collection(request: Request) -> Response:
        claims = authorize(request, state)
        if request.method == "GET":
            headers = charge(state, request, 1)
            with state.lock:
                now = state.clock.time()
                subs = [s for s in store.for_app(claims.get("appid", "")) if s.expiration > now]
                value = [s.to_json(include_client_state=False) for s in subs]
            return respond({"@odata.context": context(), "value": value}, 200, headers)
        return await create(request, claims)

    async def create(request: Request, claims: dict[str, Any]) -> Response:
        body = await read_json(request)
        for required in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if body.get(required) in (None, ""):
                raise _invalid(f"'{required}' is a required property.")
        change_types = _check_change_types(body["changeType"])
        spec = _check_resource(body["resource"])
        _require_roles(claims, spec)
        headers = charge(state, request, 1, write=True)
        url = check_notification_url(body["notificationUrl"], "notificationUrl")
        lifecycle_url = body.get("lifecycleNotificationUrl")
        if lifecycle_url is not None:
            lifecycle_url = check_notification_url(lifecycle_url, "lifecycleNotificationUrl")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE):
            raise _invalid(f"'clientState' must be a string of at most {MAX_CLIENT_STATE} characters.")
        expiration = _check_expiration(state, body["expirationDateTime"])
        tls = body.get("latestSupportedTlsVersion") or "v1_2"
        if tls not in _TLS_VERSIONS:
            raise _invalid(f"Invalid 'latestSupportedTlsVersion': '{tls}'.")
        if body.get("includeResourceData"):
            raise _invalid("Rich notifications (includeResourceData) are not supported for this resource.")
        app_id = str(claims.get("appid") or state.creds.graph_client_id)
        check_quota(app_id)
        await validate_endpoint(state, url)
        if lifecycle_url:
            await validate_endpoint(state, lifecycle_url)
        now = state.clock.time()
        sub = Subscription(
            resource=str(body["resource"]),
            spec=spec,
            change_types=change_types,
            notification_url=url,
            expiration=expiration,
            application_id=app_id,
            creator_id=str(claims.get("oid") or ""),
            tenant_id=state.creds.tenant_id,
            created_at=now,
            client_state=client_state,
            lifecycle_url=lifecycle_url,
            latest_tls=tls,
            notification_query_options=body.get("notificationQueryOptions"),
            notification_url_app_id=body.get("notificationUrlAppId"),
            encryption_certificate=body.get("encryptionCertificate"),
            encryption_certificate_id=body.get("encryptionCertificateId"),
        )
        sub.reset_reauth(now)
        with state.lock:
            check_quota(app_id)  # again: other creates may have finished during the handshake
            store.add(sub)
            out = {"@odata.context": context("/$entity"), **sub.to_json(include_client_state=True)}
        state.activity.add("subscription_created", subscription_id=sub.id, resource=sub.resource, url=url)
        return respond(out, 201, headers)

    def check_quota(app_id: str) -> None:
        quota = int(state.config.get("graph.subscription_quota_per_app", 100))
        with state.lock:
            now = state.clock.time()
            live = sum(1 for s in store.for_app(app_id) if s.expiration > now)
        if live >= quota:
            raise GraphError(
                403,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; Reason: The maximum number of subscriptions "
                f"for this application and tenant has been reached (limit: {quota}).]",
            )

    async def item(request: Request) -> Response:
        claims = authorize(request, state)
        sub_id = request.path_params["sub_id"]
        if request.method == "GET":
            headers = charge(state, request, 1)
            with state.lock:
                sub = find(sub_id, claims)
                out = {"@odata.context": context("/$entity"), **sub.to_json(include_client_state=False)}
            return respond(out, 200, headers)
        headers = charge(state, request, 1, write=True)
        if request.method == "DELETE":
            with state.lock:
                sub = find(sub_id, claims)
                store.remove(sub.id)
            state.activity.add("subscription_deleted", subscription_id=sub.id, resource=sub.resource)
            return respond(None, 204, headers)
        return await update(request, claims, sub_id, headers)

    async def update(request: Request, claims: dict[str, Any], sub_id: str, headers: dict[str, str]) -> Response:
        """Renew (new expirationDateTime, no new handshake) and/or move notificationUrl (which is validated)."""
        body = await read_json(request)
        with state.lock:
            find(sub_id, claims)
        if "lifecycleNotificationUrl" in body:
            raise _invalid("'lifecycleNotificationUrl' can only be set when the subscription is created.")
        unsupported = sorted(set(body) - {"expirationDateTime", "notificationUrl", "@odata.type"})
        if unsupported:
            raise _invalid(f"Property '{unsupported[0]}' cannot be updated.")
        if "expirationDateTime" not in body and "notificationUrl" not in body:
            raise _invalid("'expirationDateTime' is required.")
        expiration = _check_expiration(state, body["expirationDateTime"]) if "expirationDateTime" in body else None
        url = check_notification_url(body["notificationUrl"], "notificationUrl") if "notificationUrl" in body else None
        if url is not None:
            await validate_endpoint(state, url)
        with state.lock:
            sub = find(sub_id, claims)
            if expiration is not None:
                sub.expiration = expiration
                sub.reset_reauth(state.clock.time())
            if url is not None:
                sub.notification_url = url
            out = {"@odata.context": context("/$entity"), **sub.to_json(include_client_state=True)}
        state.activity.add("subscription_renewed", subscription_id=sub.id, expiration=out["expirationDateTime"])
        return respond(out, 200, headers)

    async def reauthorize(request: Request) -> Response:
        claims = authorize(request, state)
        headers = charge(state, request, 1, write=True)
        interval = float(state.config.get("graph.lifecycle_reauth_interval_s", 900))
        with state.lock:
            sub = find(request.path_params["sub_id"], claims)
            now = state.clock.time()
            sub.reset_reauth(now)
            if sub.next_reauth_at is not None:
                sub.next_reauth_at = max(sub.next_reauth_at, now + interval)
        state.activity.add("subscription_reauthorized", subscription_id=sub.id)
        return respond(None, 204, headers)

    return [
        Route("/v1.0/subscriptions", guarded(collection), methods=["GET", "POST"]),
        Route("/v1.0/subscriptions/{sub_id}", guarded(item), methods=["GET", "PATCH", "DELETE"]),
        Route("/v1.0/subscriptions/{sub_id}/reauthorize", guarded(reauthorize), methods=["POST"]),
    ]
