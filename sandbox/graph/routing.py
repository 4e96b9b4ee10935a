"""A tiny Graph router shared by the HTTP entry point and `$batch`.

`$batch` must dispatch each inner request to the very same handlers, with its own auth, throttling and error shape
(Graph meters batch items one by one), without an HTTP loopback. So handlers take a transport-neutral `GraphRequest` and
return a `GraphResponse`; the Starlette endpoint and the batch handler are two thin adapters around `Router.dispatch`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sandbox.graph.auth import authorize
from sandbox.graph.errors import GraphError, error_body
from sandbox.graph.odata import parse_query
from sandbox.graph.throttle import charge, request_cost

JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

READ_USERS = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
WRITE_USERS = ("User.ReadWrite.All", "Directory.ReadWrite.All")
READ_GROUPS = (
    "Group.Read.All",
    "Group.ReadWrite.All",
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
WRITE_GROUPS = ("Group.ReadWrite.All", "Directory.ReadWrite.All")
WRITE_MEMBERS = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")
INVITE = ("User.Invite.All", "User.ReadWrite.All", "Directory.ReadWrite.All")


class Headers(dict[str, str]):
    """Case-insensitive header mapping (keys stored lower-case)."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__()
        pairs = items.items() if hasattr(items, "items") else items
        for k, v in pairs:
            self[str(k).lower()] = str(v)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class GraphRequest:
    method: str
    #: decoded path below /v1.0, e.g. "/users/bob@contoso.com"
    path: str
    raw_query: str
    headers: Headers
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: carries `graph_claims` (set by authorize) like a Starlette request's state does
    state: SimpleNamespace = field(default_factory=SimpleNamespace)

    def __post_init__(self) -> None:
        self.query = parse_query(self.raw_query)


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Endpoint:
    method: str
    regex: re.Pattern[str]
    handler: Callable[[Any, GraphRequest], GraphResponse]
    roles: tuple[str, ...]
    cost: int
    write: bool
    #: False only for `$batch` itself: its items are metered one by one instead
    metered: bool = True


class Router:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.endpoints: list[Endpoint] = []

    def add(
        self, method: str, pattern: str, roles: tuple[str, ...], cost: int = 1, metered: bool = True
    ) -> Callable[[Callable[[Any, GraphRequest], GraphResponse]], Callable[[Any, GraphRequest], GraphResponse]]:
        """Register a handler; `{name}` matches one path segment. Earlier registrations win."""
        regex = re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(pattern)) + "/?$",
            re.IGNORECASE,
        )

        def deco(fn: Callable[[Any, GraphRequest], GraphResponse]) -> Callable[[Any, GraphRequest], GraphResponse]:
            self.endpoints.append(Endpoint(method, regex, fn, roles, cost, method != "GET", metered))
            return fn

        return deco

    def _match(self, req: GraphRequest) -> Endpoint:
        allowed = False
        for ep in self.endpoints:
            m = ep.regex.match(req.path)
            if m is None:
                continue
            if ep.method != req.method:
                allowed = True
                continue
            req.params = m.groupdict()  # req.path is decoded already: decoding again would over-decode
            return ep
        if allowed:
            raise GraphError(405, "Request_BadRequest", f"The request method '{req.method}' is not allowed.")
        segment = next((s for s in req.path.split("/") if s), "")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def dispatch(self, req: GraphRequest) -> GraphResponse:
        """Auth, per-request throttling and the handler; every failure comes back Graph-shaped."""
        state = self.state
        rid = str(uuid.uuid4())
        headers: dict[str, str] = {"request-id": rid, "client-request-id": req.headers.get("client-request-id", rid)}
        ep_write = False
        try:
            latency = float(state.faults.get("graph.latency_ms", 0) or 0)
            if latency > 0:
                time.sleep(latency / 1000.0)
            ep = self._match(req)
            # $batch itself is no write (its items are dispatched, and counted, one by one); getByIds only reads
            ep_write = ep.write and ep.metered and not req.path.lower().endswith("/getbyids")
            authorize(req, state, *ep.roles)
            if ep.metered:
                headers.update(charge(state, req, request_cost(req.method, ep.cost, req.query), write=ep.write))
            resp = ep.handler(state, req)
            resp.headers = {**headers, **resp.headers}
        except GraphError as err:
            resp = GraphResponse(
                err.status, error_body(state, err, headers["client-request-id"]), {**headers, **err.headers}
            )
        state.activity.add("graph_request", method=req.method, path="/v1.0" + req.path, status=resp.status)
        if ep_write and resp.status < 400:
            state.activity.count("graph_write")  # a dry run must leave this unchanged
        return resp


def render(resp: GraphResponse) -> Response:
    if resp.body is None:
        return Response(status_code=resp.status, headers=resp.headers)
    if isinstance(resp.body, str):
        return Response(resp.body, status_code=resp.status, headers=resp.headers, media_type="text/plain")
    content = json.dumps(resp.body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content, status_code=resp.status, headers=resp.headers, media_type=JSON_TYPE)


def make_endpoint(router: Router) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        # one per HTTP request to /v1.0 (a $batch envelope once, whatever it carries; tokens not included):
        # what a client paid in round trips
        router.state.activity.count("graph_http")
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                err = GraphError(
                    400,
                    "BadRequest",
                    "Unable to read JSON request payload. Please ensure Content-Type "
                    "header is set and payload is of valid JSON format.",
                )
                return render(GraphResponse(400, error_body(router.state, err)))
        # the ASGI server percent-decoded the path once (`%23` -> `#`), as Graph does; decoding it again would turn
        # a literal `%23` in a UPN (sent as `%2523`) into `#` where Graph would not
        path = request.scope["path"]
        sub = path[len("/v1.0") :] if path.lower().startswith("/v1.0") else path
        req = GraphRequest(request.method, sub or "/", request.url.query, Headers(request.headers), body)
        resp = await run_in_threadpool(router.dispatch, req)
        return render(resp)

    return endpoint
