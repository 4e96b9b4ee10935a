"""`GET query`, `queryAll` and their `nextRecordsUrl` pages, plus `run_query`/`query_more` for composite.

Routes are relative to the data-API mount (`/services/data/v{version}`), behind `ApiGuard` (version, session, limits,
faults; `SalesforceApiError` rendering). Paging follows Salesforce:
- the first call evaluates the query once and, when more rows remain, stores a server-side cursor (the matched
  records in order) under a locator like `01gAbC...-2000`; `nextRecordsUrl` is a *path*
  (`/services/data/v62.0/query/01g...-2000`) because simple-salesforce prefixes it with `https://{instance}`;
- later pages slice the stored rows and render only that slice, which keeps a 100,000-row `query_all` cheap;
  a page may be fetched again (a client retrying after a dropped connection) until the cursor expires;
- cursors die after 15 minutes without use on the sandbox clock (then 400 INVALID_QUERY_LOCATOR), and at most
  `MAX_CURSORS` stay open (oldest dropped first), as a real org caps open cursors per user.

Page size: `Sforce-Query-Options: batchSize=N` is clamped to 200..2000 (Salesforce's range); the tunable
`salesforce.query_batch_size` caps it further (Salesforce treats batchSize as a hint and may return fewer), which
lets tests page through a small seeded org.
"""

from __future__ import annotations

import re
import secrets
import string
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sandbox.salesforce.api import SalesforceApiError
from sandbox.salesforce.soql import SoqlError, execute, parse
from sandbox.salesforce.soql_eval import QueryResult

CURSOR_IDLE_S = 15 * 60
MAX_CURSORS = 100
MIN_BATCH, MAX_BATCH = 200, 2000
_LOCATOR_RE = re.compile(r"^(01g[A-Za-z0-9]{15})-(\d+)$")
_ALNUM = string.ascii_letters + string.digits
_BATCH_RE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


@dataclass
class Cursor:
    result: QueryResult
    include_deleted: bool
    batch_size: int
    last_used: float


class CursorStore:
    """Open query cursors of one sandbox, thread-safe (routes run in the threadpool)."""

    def __init__(self) -> None:
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, cursor: Cursor, now: float) -> str:
        locator = "01g" + "".join(secrets.choice(_ALNUM) for _ in range(15))
        with self._lock:
            self._expire(now)
            self._cursors[locator] = cursor
            while len(self._cursors) > MAX_CURSORS:
                self._cursors.popitem(last=False)
        return locator

    def use(self, locator: str, now: float) -> Cursor | None:
        with self._lock:
            self._expire(now)
            cursor = self._cursors.get(locator)
            if cursor is not None:
                cursor.last_used = now
                self._cursors.move_to_end(locator)
            return cursor

    def close(self, locator: str) -> None:
        with self._lock:
            self._cursors.pop(locator, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cursors)

    def _expire(self, now: float) -> None:
        dead = [k for k, c in self._cursors.items() if now - c.last_used > CURSOR_IDLE_S]
        for k in dead:
            del self._cursors[k]


_stores_lock = threading.Lock()


def cursors(state: Any) -> CursorStore:
    """The state's cursor store, created on first use.

    Kept as an attribute on the state object (SandboxState declares no field for it) so that two sandboxes in one
    process never share cursors.
    """
    store = state.__dict__.get("sf_query_cursors")
    if store is None:
        with _stores_lock:
            store = state.__dict__.setdefault("sf_query_cursors", CursorStore())
    return store


def _effective_batch(state: Any, requested: int | None) -> int:
    size = MAX_BATCH if requested is None else min(max(requested, MIN_BATCH), MAX_BATCH)
    cap = int(state.config.get("salesforce.query_batch_size", MAX_BATCH) or MAX_BATCH)
    return max(1, min(size, cap))


def _page(state: Any, cursor: Cursor, locator: str | None, start: int, version: str) -> dict[str, Any]:
    result = cursor.result
    total = len(result.rows) if result.aggregate is None else len(result.aggregate)
    stop = min(start + cursor.batch_size, total)
    with state.lock:
        records = result.page(start, stop, version)
    body: dict[str, Any] = {"totalSize": result.total_size, "done": stop >= total}
    if stop < total:
        now = state.clock.time()
        if locator is None:
            locator = cursors(state).open(cursor, now)
        resource = "queryAll" if cursor.include_deleted else "query"
        body["nextRecordsUrl"] = f"/services/data/v{version}/{resource}/{locator}-{stop}"
    body["records"] = records
    return body


def run_query(
    state: Any, soql: str, *, include_deleted: bool, version: str, batch_size: int | None = None
) -> dict[str, Any]:
    """Answer `query`/`queryAll` with the first page; raises SalesforceApiError(400, <SoqlError code>) on bad SOQL.

    `batch_size` is the client's requested size (from `Sforce-Query-Options`), None for the default.
    """
    if not soql or not soql.strip():
        raise SalesforceApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    try:
        query = parse(soql)
        with state.lock:
            result = execute(query, state.org, include_deleted=include_deleted, now=state.clock.now())
    except SoqlError as exc:
        raise SalesforceApiError(400, exc.error_code, exc.message) from None
    if result.count_only:
        return {"totalSize": result.total_size, "done": True, "records": []}
    cursor = Cursor(result, include_deleted, _effective_batch(state, batch_size), state.clock.time())
    return _page(state, cursor, None, 0, version)


def query_more(state: Any, locator: str, version: str) -> dict[str, Any]:
    """Answer `query/{locator}` (`01g...-N`): the page starting at row N of the stored cursor."""
    match = _LOCATOR_RE.match(locator)
    cursor = cursors(state).use(match.group(1), state.clock.time()) if match else None
    if match is None or cursor is None:
        raise SalesforceApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    start = int(match.group(2))
    total = len(cursor.result.rows) if cursor.result.aggregate is None else len(cursor.result.aggregate)
    if start > total:
        raise SalesforceApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return _page(state, cursor, match.group(1), start, version)


def requested_batch_size(request: Request) -> int | None:
    header = request.headers.get("sforce-query-options", "")
    match = _BATCH_RE.search(header)
    return int(match.group(1)) if match else None


def query_routes(state: Any) -> list[BaseRoute]:
    """Routes for the data-API mount; endpoints are sync so big queries run in the threadpool, not the event loop."""

    def first_page(include_deleted: bool) -> Any:
        def endpoint(request: Request) -> JSONResponse:
            body = run_query(
                state,
                request.query_params.get("q", ""),
                include_deleted=include_deleted,
                version=request.path_params["version"],
                batch_size=requested_batch_size(request),
            )
            return JSONResponse(body)

        return endpoint

    def next_page(request: Request) -> JSONResponse:
        return JSONResponse(query_more(state, request.path_params["locator"], request.path_params["version"]))

    return [
        Route("/query", first_page(False), methods=["GET"], name="sf_query"),
        Route("/queryAll", first_page(True), methods=["GET"], name="sf_query_all"),
        Route("/query/{locator}", next_page, methods=["GET"], name="sf_query_more"),
        Route("/queryAll/{locator}", next_page, methods=["GET"], name="sf_query_all_more"),
    ]
