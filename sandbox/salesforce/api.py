"""Error type and the guard every `/services/data/vNN.N/...` request passes through.

How routes use it (contract for every Salesforce route module, including `query_routes`):

- `sandbox.salesforce.install` mounts all data routes as
  `Mount("/services/data/v{version}", routes=[...], middleware=[Middleware(ApiGuard, state=state)])`.
  Route paths are therefore *relative* and have no trailing slash: `Route("/query", ...)`, `Route("/sobjects/{name}")`.
  The API version (e.g. "62.0") is in `request.path_params["version"]`.
- The guard strips one trailing slash before routing (simple-salesforce calls `sobjects/User/`, `query/?q=`,
  `limits/`), so a route never needs a slash variant.
- Before a route runs the guard has: checked the version (59.0-67.0, else 404 NOT_FOUND), resolved the bearer
  session (401 INVALID_AUTH_HEADER / INVALID_SESSION_ID), counted the call in the rolling 24 h window of the sandbox
  clock (403 REQUEST_LIMIT_EXCEEDED above `salesforce.daily_api_limit`), and applied faults. The session is at
  `request.scope["sf_session"]` (`sandbox.salesforce.org.Session`: user_id, token, expires_at).
- Routes signal errors by raising `SalesforceApiError`; the guard renders it as the JSON *list* body
  `[{"message", "errorCode", "fields"}]` simple-salesforce needs. A path no route serves answers 404 NOT_FOUND ("The
  requested resource does not exist"), a route asked with another method 405 METHOD_NOT_ALLOWED, as an org does;
  any other exception becomes 500 UNKNOWN_EXCEPTION.
- Every response the guard lets out carries `Sforce-Limit-Info: api-usage=N/M`.

Fault choices (documented because they are the sandbox's, not Salesforce's):
- `503`: HTTP 503 `[{"errorCode":"SERVER_UNAVAILABLE","message":"Server is busy..."}]`.
- `UNABLE_TO_LOCK_ROW`: HTTP 400 (as real Salesforce answers DML failures) with the errorCode clients classify on.
- `timeout`: the request is held `faults.salesforce.timeout_hold_s` (default 35 s) or until the client disconnects,
  then answered 503, so a client with a shorter timeout sees a read timeout.
- `reset`: the TCP connection is aborted before any response byte is written.
Faults are drawn after the call is counted: a real org bills requests it then fails.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import traceback
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIN_VERSION = 59.0
MAX_VERSION = 67.0
_VERSION_RE = re.compile(r"^\d{2}\.0$")
_fault_rng = random.Random()


class SalesforceApiError(Exception):
    """A Salesforce REST error; rendered as `[{"message","errorCode","fields"}]` with `status`."""

    def __init__(self, status: int, error_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = list(fields or [])

    def body(self) -> list[dict[str, Any]]:
        return [{"message": self.message, "errorCode": self.error_code, "fields": self.fields}]

    def collection_error(self) -> dict[str, Any]:
        """The sObject Collections flavour: the key is `statusCode`, not `errorCode`."""
        return {"statusCode": self.error_code, "message": self.message, "fields": self.fields}


def not_found(message: str = "The requested resource does not exist") -> SalesforceApiError:
    return SalesforceApiError(404, "NOT_FOUND", message)


def version_supported(version: str) -> bool:
    return bool(_VERSION_RE.match(version)) and MIN_VERSION <= float(version) <= MAX_VERSION


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def _find_transport(send: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """Walk the `send` wrappers (closures, bound methods) down to uvicorn's cycle, which holds the transport.

    ASGI gives an app no handle on the socket; the `reset` fault needs one to drop the connection without writing a
    response, so this digs through Starlette's wrappers (closures) to uvicorn's `RequestResponseCycle.send`.
    """
    seen = seen if seen is not None else set()
    if depth > 12 or id(send) in seen:
        return None
    seen.add(id(send))
    owner = getattr(send, "__self__", None)
    if owner is not None and hasattr(owner, "transport"):
        return owner.transport
    for cell in getattr(send, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if callable(value):
            found = _find_transport(value, depth + 1, seen)
            if found is not None:
                return found
    func = getattr(send, "__func__", None)
    if func is not None:
        return _find_transport(func, depth + 1, seen)
    return None


class ApiGuard:
    """Pure ASGI middleware for the versioned data API (see module docstring for the contract)."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        org = state.org
        path = scope.get("path", "")
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/"))
            if scope.get("raw_path"):
                scope["raw_path"] = scope["raw_path"].rstrip(b"/")
        version = scope.get("path_params", {}).get("version", "")
        method = scope.get("method", "GET")
        usage: list[str] = []

        async def respond(status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json_bytes(body)
            hdrs = [(b"content-type", b"application/json;charset=UTF-8"), (b"content-length", str(len(data)).encode())]
            for k, v in (headers or {}).items():
                hdrs.append((k.lower().encode(), v.encode()))
            if usage:
                hdrs.append((b"sforce-limit-info", usage[0].encode()))
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": data})
            state.activity.add("sf_request", method=method, path=path, status=status)

        if not version_supported(version):
            await respond(404, not_found().body())
            return
        auth = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "oauth") or not token or " " in token:
            await respond(401, [{"message": "INVALID_AUTH_HEADER", "errorCode": "INVALID_AUTH_HEADER"}])
            return
        now = state.clock.time()
        session = org.session(token, now)
        if session is None:
            await respond(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
            return
        limit = int(state.config.get("salesforce.daily_api_limit", 100_000))
        allowed, used = org.count_api_call(now, limit)
        usage.append(f"api-usage={used}/{limit}")
        if not allowed:
            await respond(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
            return

        latency = float(state.faults.get("salesforce.latency_ms", 0) or 0)
        if latency > 0:
            await asyncio.sleep(latency / 1000.0)
        rate = float(state.faults.get("salesforce.error_rate", 0) or 0)
        if rate > 0 and _fault_rng.random() < rate:
            kinds = list(state.faults.get("salesforce.error_kinds", ["503"]) or ["503"])
            kind = str(_fault_rng.choice(kinds))
            if await self._fault(kind, scope, receive, send, respond, session.user_id):
                return

        scope = dict(scope, sf_session=session)
        started: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"sforce-limit-info", usage[0].encode()))
                message = dict(message, headers=headers)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except SalesforceApiError as exc:
            if started:
                raise
            await respond(exc.status, exc.body())
            return
        except HTTPException as exc:  # the router's own answer: no such resource, or not with this method
            if started:
                raise
            if exc.status_code == 405:
                await respond(405, [{"message": f"HTTP Method '{method}' not allowed. Allowed are "
                                     f"{(exc.headers or {}).get('Allow', 'GET')}", "errorCode": "METHOD_NOT_ALLOWED"}])
            else:
                await respond(404, not_found().body())
            return
        except Exception:  # noqa: BLE001 - a real org answers 500 UNKNOWN_EXCEPTION, never a bare stack trace
            if started:
                raise
            traceback.print_exc()
            await respond(500, [{"message": "An unexpected error occurred. Please include this ErrorId if you "
                                 "contact support: sandbox", "errorCode": "UNKNOWN_EXCEPTION"}])
            return
        if started:
            state.activity.add("sf_request", method=method, path=path, status=started[0])

    async def _fault(self, kind: str, scope: Scope, receive: Receive, send: Send, respond: Any, user_id: str) -> bool:
        """Apply one fault; True when it answered (or killed) the request."""
        if kind == "503":
            await respond(503, [{"message": "Server is busy, please retry later.", "errorCode": "SERVER_UNAVAILABLE"}])
            return True
        if kind == "UNABLE_TO_LOCK_ROW":
            await respond(400, [{"message": f"unable to obtain exclusive access to this record or 1 records: {user_id}",
                                 "errorCode": "UNABLE_TO_LOCK_ROW", "fields": []}])
            return True
        if kind == "timeout":
            hold = float(self.state.faults.get("salesforce.timeout_hold_s", 35) or 35)
            try:
                async with asyncio.timeout(hold):
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return True
            except TimeoutError:
                pass
            await respond(503, [{"message": "Request timed out", "errorCode": "SERVER_UNAVAILABLE"}])
            return True
        if kind == "reset":
            transport = _find_transport(send)
            self.state.activity.add("sf_request", method=scope.get("method"), path=scope.get("path"), status=0)
            if transport is not None:
                transport.abort()
                await asyncio.sleep(0.05)  # let uvicorn notice connection_lost before the app returns
                return True
            raise ConnectionResetError("sandbox fault: reset")  # fallback: uvicorn answers 500 and closes
        return False
