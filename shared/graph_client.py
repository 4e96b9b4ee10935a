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
from dataclasses import dataclass
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
from shared.http_sessions import pinned_session
from shared.limiter import Limiter
from shared.logging import get_logger

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
DELTA_RESOURCES = ("users", "groups")
#: JSON batching takes at most 20 requests per envelope (https://learn.microsoft.com/graph/json-batching).
BATCH_LIMIT = 20
#: The `in` operator of $filter takes at most 15 values in a directory query (https://learn.microsoft.com/graph/
#: known-issues, "query parameter limitations"); more fail with a 400.
IN_FILTER_LIMIT = 15
#: The largest page size directory collections accept (https://learn.microsoft.com/graph/paging).
MAX_PAGE_SIZE = 999
#: A throttled item inside a $batch is retried in the next envelope when its Retry-After is at most this long;
#: longer waits go back to the caller as GraphThrottled (the worker parks the work).
BATCH_INLINE_RETRY_S = 2.0
#: MSAL error codes that mean our credentials or consent are wrong, not that the token service is struggling.
_PERMANENT_TOKEN_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_request", "invalid_grant"}
)

log = get_logger(__name__)


@dataclass(frozen=True)
class BatchRequest:
    """One item of a $batch: a path relative to the Graph version root (`users?$filter=...`) and an optional body."""

    method: str
    url: str
    body: Any = None


@dataclass(frozen=True)
class BatchResponse:
    status: int
    headers: dict[str, str]
    body: Any


def _batch_item(item_id: str, request: BatchRequest) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "method": request.method, "url": "/" + request.url.lstrip("/")}
    if request.body is not None:
        item["body"] = request.body
        item["headers"] = {"Content-Type": "application/json"}
    return item


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _ok_body(response: BatchResponse) -> dict[str, Any]:
    """The body of a successful batch item, or the typed error a direct request would have raised."""
    if response.status < 400:
        return response.body if isinstance(response.body, dict) else {}
    error = response.body.get("error") if isinstance(response.body, dict) else None
    code = str(error.get("code")) if isinstance(error, dict) and error.get("code") else None
    message = str(error.get("message")) if isinstance(error, dict) and error.get("message") else "batch item failed"
    cls = classify_graph(response.status, code)
    raise cls(message[:500], service=SERVICE_GRAPH, status=response.status, code=code)


class TokenSource(Protocol):
    """The part of `msal.ConfidentialClientApplication` we use; tests pass a fake."""

    def acquire_token_for_client(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]: ...

    def remove_tokens_for_client(self) -> None: ...


def _ssl_context(ca_bundle: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else ssl.create_default_context()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: integer, float (Graph sends "2.128") or an HTTP date
    (docs/decisions.md#throttling-and-retry-after)."""
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
        #: HTTP requests sent (a $batch envelope counts once): reconciliation reports its calls next to the minimum
        self.calls = 0

    # --- token ------------------------------------------------------------------------------------------------
    def _tokens(self) -> TokenSource:
        """Built on first use: MSAL fetches the OpenID configuration in its constructor, and a worker must start
        (and report) even while the identity endpoint is unreachable."""
        if self._token_source is None:
            s = self._settings
            self._msal_session = pinned_session(s.ca_bundle)
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

    def _admit(self, cost: int = 1) -> None:
        if self._limiter is None:
            return
        wait = self._limiter.admit(SERVICE_GRAPH, self._lane, self._tenant, cost=cost, sleep=self._sleep)
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
        cost: int = 1,
    ) -> httpx.Response:
        """One Graph call; a 2xx/3xx response is returned, anything else raised as an `IdsyncError`.

        A 401 gets one retry with a fresh token (a cached token may have been revoked); never more.
        """
        url = self._url(path_or_url)
        for attempt in (1, 2):
            self._admit(cost)
            sent = {
                "Authorization": f"Bearer {self._access_token()}",
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
                **(headers or {}),
            }
            self.calls += 1
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
                    log.warning("graph_block_until_failed", error=str(exc))
            log.info("graph_throttled", status=response.status_code, retry_after_s=wait, request_id=request_id)
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

    # --- JSON batching -----------------------------------------------------------------------------------------
    def batch(self, requests: list[BatchRequest]) -> list[BatchResponse]:
        """Send `requests` in $batch envelopes of 20; responses come back in input order.

        Why a loop: Graph meters every item of a batch on its own, so one item can be 429 (with its own Retry-After)
        while the envelope is 200. Such items are sent again, after their wait if it is short; a long wait raises
        GraphThrottled for the caller to park. Every other item outcome (404, 400...) is returned, not raised: the
        caller decides per item. An envelope that fails as a whole raises like any request.
        """
        results: list[BatchResponse | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        while pending:
            retry: list[int] = []
            wait = 0.0
            for start in range(0, len(pending), BATCH_LIMIT):
                chunk = pending[start : start + BATCH_LIMIT]
                body = {"requests": [_batch_item(str(n), requests[i]) for n, i in enumerate(chunk)]}
                envelope = self.request("POST", "$batch", json=body, cost=len(chunk)).json()
                by_id = {str(r.get("id")): r for r in envelope.get("responses", []) if isinstance(r, dict)}
                for n, i in enumerate(chunk):
                    raw = by_id.get(str(n))
                    if raw is None:
                        raise RetryableError("a $batch response lacks an item", service=SERVICE_GRAPH, code="batch")
                    item = BatchResponse(
                        status=int(raw.get("status", 0)), headers=dict(raw.get("headers") or {}), body=raw.get("body")
                    )
                    if item.status in (429, 503):
                        after = parse_retry_after(_header(item.headers, "Retry-After"))
                        wait = max(wait, after if after is not None else self._default_backoff())
                        retry.append(i)
                    else:
                        results[i] = item
            if retry:
                self._throttle_streak += 1
                if self._limiter is not None:
                    self._limiter.block_until(SERVICE_GRAPH, self._tenant, wait)
                if wait > BATCH_INLINE_RETRY_S:
                    log.info("graph_batch_throttled", items=len(retry), retry_after_s=wait)
                    raise GraphThrottled("batch items throttled", service=SERVICE_GRAPH, status=429, retry_after=wait)
                self._sleep(wait)
            pending = retry
        return [r for r in results if r is not None]

    def users_by_ids(
        self, ids: list[str], select: list[str], *, expand_manager: bool = True
    ) -> dict[str, dict[str, Any]]:
        """The users among `ids` that exist (not deleted), with `manager` expanded to its id; 15 ids per request.

        Why `$filter=id in (...)` and not one GET per user: 15 users per request and 20 requests per envelope read
        300 users per HTTP call, at a fraction of the resource units (throttling budget) per user.
        """
        found: dict[str, dict[str, Any]] = {}
        fields = ",".join(dict.fromkeys(["id", *select]))
        requests = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), IN_FILTER_LIMIT):
            chunk = unique[start : start + IN_FILTER_LIMIT]
            quoted = ",".join("'" + i.replace("'", "''") + "'" for i in chunk)
            query = f"$filter=id in ({quoted})&$select={fields}&$top={IN_FILTER_LIMIT}"
            if expand_manager:
                query += "&$expand=manager($select=id)"
            requests.append(BatchRequest("GET", f"users?{query}"))
        for response in self.batch(requests):
            page = _ok_body(response)
            for user in page.get("value", []):
                if isinstance(user, dict) and user.get("id"):
                    found[str(user["id"])] = user
        return found

    def user_pages(self, select: list[str], *, expand_manager: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Every user of the tenant, one page at a time, `MAX_PAGE_SIZE` asked per page: reconciliation reads the
        whole tenant without holding it.

        With `expand_manager`, each user carries `manager` ({"id": ...}, absent when none). A directory collection
        read with `$expand` comes at most 100 objects per page whatever `$top` asks (what tenants observe for
        `/users?$expand=manager&$top=999`, answered with Graph known issue 13635,
        https://developer.microsoft.com/en-us/graph/known-issues/?search=13635), so a real tenant answers 100 users
        per page then; the loop follows `@odata.nextLink` whatever page size the service chose.
        """
        fields = ",".join(dict.fromkeys(["id", *select]))
        params: dict[str, Any] = {"$select": fields, "$top": str(MAX_PAGE_SIZE)}
        if expand_manager:
            params["$expand"] = "manager($select=id)"
        for page in self._pages("users", params):
            yield [u for u in page.get("value", []) if isinstance(u, dict) and u.get("id")]

    def transitive_member_ids(self, group_id: str) -> set[str]:
        """Ids of every user that is a member of the group directly or through nested groups (all pages)."""
        return self._ids_of_type(f"groups/{quote(group_id, safe='')}/transitiveMembers", "user")

    def transitive_group_ids_of(self, object_id: str, kind: str = "users") -> set[str]:
        """Ids of the groups a user (or, with kind="groups", a group) belongs to, directly or through nesting."""
        if kind not in ("users", "groups"):
            raise ValueError("kind must be users or groups")
        return self._ids_of_type(f"{kind}/{quote(object_id, safe='')}/transitiveMemberOf", "group")

    def _ids_of_type(self, url: str, kind: str) -> set[str]:
        """Ids of the directory objects of one type in every page of a collection (`@odata.type` absent: `kind`)."""
        ids: set[str] = set()
        for page in self._pages(url, {"$select": "id", "$top": str(MAX_PAGE_SIZE)}):
            for item in page.get("value", []):
                if not isinstance(item, dict) or not item.get("id"):
                    continue
                if str(item.get("@odata.type", f"#microsoft.graph.{kind}")).lower().endswith(f".{kind}"):
                    ids.add(str(item["id"]))
        return ids

    def _pages(self, url: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a collection, following `@odata.nextLink` (which carries the query: `params` go on the
        first request only)."""
        next_url: str | None = url
        while next_url:
            page = self.request("GET", next_url, params=params).json()
            params = None
            yield page
            next_url = page.get("@odata.nextLink")

    def groups_by_name(self, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Display name -> the groups carrying it (display names are not unique in Entra: callers must check)."""
        out: dict[str, list[dict[str, Any]]] = {}
        requests = [
            BatchRequest("GET", "groups?$filter=displayName eq '" + n.replace("'", "''") + "'&$select=id,displayName")
            for n in names
        ]
        for name, response in zip(names, self.batch(requests), strict=True):
            out[name] = [g for g in _ok_body(response).get("value", []) if isinstance(g, dict)]
        return out

    def groups_by_ids(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Id -> group (id, displayName) for the groups that exist."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(ids))
        requests = []
        for start in range(0, len(unique), IN_FILTER_LIMIT):
            chunk = unique[start : start + IN_FILTER_LIMIT]
            quoted = ",".join("'" + i.replace("'", "''") + "'" for i in chunk)
            requests.append(BatchRequest("GET", f"groups?$filter=id in ({quoted})&$select=id,displayName"))
        for response in self.batch(requests):
            for group in _ok_body(response).get("value", []):
                if isinstance(group, dict) and group.get("id"):
                    found[str(group["id"])] = group
        return found

    # --- delta ------------------------------------------------------------------------------------------------
    def delta_pages(self, resource: str, link: str | None, select: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield raw pages of one delta round; the last has `@odata.deltaLink` (the caller's next checkpoint).

        Pages are yielded one by one so the caller can publish each page's events before reading the next; a 410
        raises `DeltaExpired` with the Location to restart from.
        """
        if resource not in DELTA_RESOURCES:
            raise ValueError(f"delta is supported for {DELTA_RESOURCES}, not {resource!r}")
        params = {"$select": ",".join(select)} if select and not link else None
        yield from self._pages(link or f"{resource}/delta", params)  # next/delta links carry the original query

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
        return [sub for page in self._pages("subscriptions") for sub in page.get("value", [])]

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
