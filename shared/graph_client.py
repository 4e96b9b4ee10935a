"""Microsoft Graph over httpx with an app-only MSAL token, the fleet-wide limiter, and Graph's errors mapped to ours.

Why httpx + MSAL directly rather than the Graph SDK: we need only a dozen endpoints, and we must control three
things the SDK hides: the CA bundle (the environment must not override it), Retry-After shared across processes,
and raw delta pages (the deltaLink is our checkpoint).
"""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
import msal
import requests

from shared.errors import (
    SERVICE_GRAPH,
    AuthenticationFailed,
    DeltaExpired,
    GraphThrottled,
    IdsyncError,
    NotFound,
    RetryableError,
    TransportError,
    classify_graph,
)
from shared.limiter import Limiter
from shared.logging import get_logger

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
DELTA_RESOURCES = ("users", "groups")
#: MSAL error codes that mean our credentials or consent are wrong, not that the token service is struggling.
_PERMANENT_TOKEN_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_request", "invalid_grant"}
)

log = get_logger(__name__)


class TokenSource(Protocol):
    """The part of `msal.ConfidentialClientApplication` we use; tests pass a fake."""

    def acquire_token_for_client(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]: ...

    def remove_tokens_for_client(self) -> None: ...


def _ssl_context(ca_bundle: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else ssl.create_default_context()


def _requests_session(ca_bundle: Any) -> requests.Session:
    """A session for MSAL that ignores REQUESTS_CA_BUNDLE & co. (they would override `verify` otherwise)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_bundle) if ca_bundle else True
    return session


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: integer, float (Graph sends "2.128") or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN guard


def graph_datetime(value: datetime) -> str:
    """Graph's ISO form with a Z suffix; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GraphClient:
    """One tenant's Graph API for one lane; not thread-safe (one per worker process or thread)."""

    def __init__(
        self,
        settings: Any,
        limiter: Limiter | None = None,
        lane: str = "sync",
        http: httpx.Client | None = None,
        *,
        token_source: TokenSource | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.graph_client_id:
            raise ValueError("Graph is not configured (IDSYNC_GRAPH_* settings are unset)")
        self._settings = settings
        self._limiter = limiter
        self._lane = lane
        self._tenant = str(settings.graph_tenant_id)
        self._base = str(settings.graph_url).rstrip("/")
        origin = urlsplit(self._base)
        self._origin = (origin.scheme, origin.netloc)
        self._sleep = sleep
        self._own_http = http is None
        self._http = http or httpx.Client(
            verify=_ssl_context(settings.ca_bundle),
            trust_env=False,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )
        self._token_source = token_source
        self._msal_session: requests.Session | None = None
        self._throttle_streak = 0

    # --- token ------------------------------------------------------------------------------------------------
    def _tokens(self) -> TokenSource:
        """Built on first use: MSAL fetches the OpenID configuration in its constructor, and a worker must start
        (and report) even while the identity endpoint is unreachable."""
        if self._token_source is None:
            s = self._settings
            self._msal_session = _requests_session(s.ca_bundle)
            try:
                self._token_source = msal.ConfidentialClientApplication(
                    s.graph_client_id,
                    client_credential=s.graph_client_secret.get_secret_value(),
                    authority=s.graph_authority,
                    instance_discovery=False,
                    token_cache=msal.SerializableTokenCache(),
                    http_client=self._msal_session,
                )
            except (requests.RequestException, OSError) as exc:
                raise TransportError(f"authority unreachable: {type(exc).__name__}", service=SERVICE_GRAPH) from exc
            except ValueError as exc:
                # MSAL raises ValueError for a 4xx from the OpenID configuration endpoint: wrong authority/tenant.
                raise AuthenticationFailed("authority configuration rejected", service=SERVICE_GRAPH) from exc
        return self._token_source

    def _access_token(self) -> str:
        try:
            result = self._tokens().acquire_token_for_client(scopes=[self._settings.graph_scope])
        except requests.RequestException as exc:
            raise TransportError(f"token request failed: {type(exc).__name__}", service=SERVICE_GRAPH) from exc
        token = result.get("access_token") if isinstance(result, dict) else None
        if token:
            return str(token)
        code = str(result.get("error") or "token_error") if isinstance(result, dict) else "token_error"
        # error_description is dropped on purpose: the code decides, and the description may echo request details.
        if code in _PERMANENT_TOKEN_ERRORS:
            raise AuthenticationFailed("token request rejected", service=SERVICE_GRAPH, code=code)
        raise RetryableError("token request failed", service=SERVICE_GRAPH, code=code)

    def _drop_token(self) -> None:
        if self._token_source is not None:
            self._token_source.remove_tokens_for_client()

    # --- transport --------------------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("https://", "http://")):
            parts = urlsplit(path_or_url)
            if (parts.scheme, parts.netloc) != self._origin:
                # Never send the bearer token to a host other than the configured Graph endpoint.
                raise ValueError(f"refusing a link outside {self._base}")
            return path_or_url
        return f"{self._base}/{path_or_url.lstrip('/')}"

    def _admit(self) -> None:
        if self._limiter is None:
            return
        wait = self._limiter.admit(SERVICE_GRAPH, self._lane, self._tenant, sleep=self._sleep)
        if wait > 0:
            raise GraphThrottled("rate limit reached", service=SERVICE_GRAPH, retry_after=wait)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One Graph call; a 2xx/3xx response is returned, anything else raised as an `IdsyncError`.

        A 401 gets one retry with a fresh token (a cached token may have been revoked); never more.
        """
        url = self._url(path_or_url)
        for attempt in (1, 2):
            self._admit()
            sent = {
                "Authorization": f"Bearer {self._access_token()}",
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
                **(headers or {}),
            }
            try:
                response = self._http.request(method, url, params=params, json=json, headers=sent)
            except httpx.TimeoutException as exc:
                raise TransportError("request timed out", service=SERVICE_GRAPH, code="timeout") from exc
            except httpx.TransportError as exc:
                raise TransportError(
                    f"connection failed: {type(exc).__name__}", service=SERVICE_GRAPH, code="connection"
                ) from exc
            if response.status_code < 400:
                self._throttle_streak = 0
                return response
            if response.status_code == 401 and attempt == 1:
                self._drop_token()
                continue
            raise self._error(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _default_backoff(self) -> float:
        s = self._settings
        return float(min(s.backoff_max_s, s.backoff_base_s * 2**self._throttle_streak))

    def _error(self, response: httpx.Response) -> IdsyncError:
        code, message, request_id = _parse_error(response)
        cls = classify_graph(response.status_code, code)
        common: dict[str, Any] = {
            "service": SERVICE_GRAPH,
            "status": response.status_code,
            "code": code,
            "request_id": request_id,
        }
        if cls is GraphThrottled:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is None:
                wait = self._default_backoff()
            self._throttle_streak += 1
            from shared import metrics

            metrics.GRAPH_THROTTLED.labels(self._lane).inc()
            if self._limiter is not None:
                try:
                    self._limiter.block_until(SERVICE_GRAPH, self._tenant, wait)
                except IdsyncError as exc:
                    log.warning("graph.block_until_failed", error=str(exc))
            log.info("graph.throttled", status=response.status_code, retry_after_s=wait, request_id=request_id)
            return GraphThrottled(message, retry_after=wait, **common)
        if cls is DeltaExpired:
            return DeltaExpired(message, location=response.headers.get("Location"), **common)
        return cls(message, **common)

    # --- users ------------------------------------------------------------------------------------------------
    def get_user(self, user_id: str, select: list[str] | None = None) -> dict[str, Any] | None:
        params = {"$select": ",".join(select)} if select else None
        try:
            return self.request("GET", f"users/{quote(user_id, safe='')}", params=params).json()
        except NotFound:
            return None

    def get_deleted_user(self, user_id: str) -> dict[str, Any] | None:
        """The soft-deleted user (restorable for 30 days), or None once it is gone for good."""
        try:
            return self.request("GET", f"directory/deletedItems/{quote(user_id, safe='')}").json()
        except NotFound:
            return None

    def patch_user(self, user_id: str, body: dict[str, Any]) -> None:
        self.request("PATCH", f"users/{quote(user_id, safe='')}", json=body)

    # --- delta ------------------------------------------------------------------------------------------------
    def delta_pages(self, resource: str, link: str | None, select: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield raw pages of one delta round; the last has `@odata.deltaLink` (the caller's next checkpoint).

        Pages are yielded one by one so the caller can publish each page's events before reading the next; a 410
        raises `DeltaExpired` with the Location to restart from.
        """
        if resource not in DELTA_RESOURCES:
            raise ValueError(f"delta is supported for {DELTA_RESOURCES}, not {resource!r}")
        url: str | None = link or f"{resource}/delta"
        params = {"$select": ",".join(select)} if select and not link else None
        while url:
            page = self.request("GET", url, params=params).json()
            params = None  # next/delta links carry the original query
            yield page
            url = page.get("@odata.nextLink")

    # --- subscriptions ----------------------------------------------------------------------------------------
    def create_subscription(
        self,
        resource: str,
        notification_url: str,
        lifecycle_url: str | None,
        client_state: str,
        expiration: datetime,
        change_type: str = "updated,deleted",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "changeType": change_type,
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": graph_datetime(expiration),
            "clientState": client_state,
        }
        if lifecycle_url:
            body["lifecycleNotificationUrl"] = lifecycle_url
        return self.request("POST", "subscriptions", json=body).json()

    def renew_subscription(self, sub_id: str, expiration: datetime) -> dict[str, Any]:
        body = {"expirationDateTime": graph_datetime(expiration)}
        return self.request("PATCH", f"subscriptions/{quote(sub_id, safe='')}", json=body).json()

    def reauthorize_subscription(self, sub_id: str) -> None:
        self.request("POST", f"subscriptions/{quote(sub_id, safe='')}/reauthorize")

    def delete_subscription(self, sub_id: str) -> None:
        """Idempotent: a subscription that is already gone counts as deleted."""
        try:
            self.request("DELETE", f"subscriptions/{quote(sub_id, safe='')}")
        except NotFound:
            pass

    def list_subscriptions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        url: str | None = "subscriptions"
        while url:
            page = self.request("GET", url).json()
            found.extend(page.get("value", []))
            url = page.get("@odata.nextLink")
        return found

    def close(self) -> None:
        if self._own_http:
            self._http.close()
        if self._msal_session is not None:
            self._msal_session.close()


def _parse_error(response: httpx.Response) -> tuple[str | None, str, str | None]:
    """(code, message, request-id) from Graph's `{"error": {...}}` body; tolerant of non-JSON bodies."""
    request_id = response.headers.get("request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, response.reason_phrase or f"HTTP {response.status_code}", request_id
    inner = error.get("innerError") or error.get("innererror") or {}
    if isinstance(inner, dict):
        request_id = inner.get("request-id") or request_id
    code = error.get("code")
    message = str(error.get("message") or response.reason_phrase or f"HTTP {response.status_code}")
    return (str(code) if code else None), message[:500], request_id
