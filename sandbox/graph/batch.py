"""JSON batching: `POST /v1.0/$batch` (https://learn.microsoft.com/graph/json-batching).

Each inner request goes through the same router as a top-level one - its own auth check, its own throttling charge
(so one item can be 429 with its own Retry-After while the batch is 200), its own Graph-shaped error - and
`dependsOn` turns a failed prerequisite into 424 for its dependants. The envelope itself is not metered.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from sandbox.graph.errors import GraphError, bad_request, error_body
from sandbox.graph.routing import JSON_TYPE, GraphRequest, GraphResponse, Headers, Router

MAX_REQUESTS = 20
_ABSOLUTE = re.compile(r"^https?://[^/]+/v1\.0", re.IGNORECASE)
_METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}


def _validate(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise bad_request("Invalid batch payload format.", "BadRequest")
    items = body["requests"]
    if not items:
        raise bad_request("Invalid batch payload format: 'requests' must not be empty.", "BadRequest")
    if len(items) > MAX_REQUESTS:
        raise bad_request(
            f"Number of batch request steps ({len(items)}) exceeds the maximum of {MAX_REQUESTS}.", "BadRequest"
        )
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise bad_request("Invalid batch payload format.", "BadRequest")
        rid, method, url = item.get("id"), item.get("method"), item.get("url")
        if not isinstance(rid, str) or not rid:
            raise bad_request("Batch request is missing the 'id' property.", "BadRequest")
        if rid.lower() in seen:
            raise bad_request(f"Batch request contains duplicate request id '{rid}'.", "BadRequest")
        seen.add(rid.lower())
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise bad_request(f"Invalid method '{method}' in batch request '{rid}'.", "BadRequest")
        if not isinstance(url, str) or not url:
            raise bad_request(f"Batch request '{rid}' is missing the 'url' property.", "BadRequest")
        headers = Headers(item.get("headers") or {})
        if "body" in item and item["body"] is not None and not headers.get("content-type"):
            raise bad_request(
                f"Content-Type header must be specified for the request '{rid}' with a body.", "BadRequest"
            )
    ids = {i["id"].lower() for i in items}
    for item in items:
        deps = item.get("dependsOn") or []
        if not isinstance(deps, list) or any(not isinstance(x, str) or x.lower() not in ids for x in deps):
            raise bad_request(f"Batch request '{item['id']}' depends on an unknown request id.", "BadRequest")
        if any(x.lower() == item["id"].lower() for x in deps):
            raise bad_request(f"Batch request '{item['id']}' depends on itself.", "BadRequest")
    return items


def _order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dependencies before dependants (Kahn); a cycle makes the whole batch 400."""
    by_id = {i["id"].lower(): i for i in items}
    done: set[str] = set()
    ordered: list[dict[str, Any]] = []
    pending = list(items)
    while pending:
        progressed = False
        for item in list(pending):
            if all(d.lower() in done for d in item.get("dependsOn") or []):
                ordered.append(item)
                done.add(item["id"].lower())
                pending.remove(item)
                progressed = True
        if not progressed:
            raise bad_request("Batch request dependencies contain a cycle.", "BadRequest")
    assert len(ordered) == len(by_id)
    return ordered


def register(router: Router) -> None:
    @router.add("POST", "/$batch", (), metered=False)
    def batch(state: Any, req: GraphRequest) -> GraphResponse:
        items = _order(_validate(req.body))
        outer = {k: v for k, v in req.headers.items() if k in ("authorization", "client-request-id")}
        status_by_id: dict[str, int] = {}
        responses = []
        for item in items:
            rid = item["id"]
            failed = [d for d in item.get("dependsOn") or [] if status_by_id.get(d.lower(), 200) >= 400]
            if failed:
                err = GraphError(424, "FailedDependency", f"Failed dependency: request '{failed[0]}' failed.")
                resp = GraphResponse(424, error_body(state, err))
            else:
                url = _ABSOLUTE.sub("", item["url"].strip())
                if not url.startswith("/"):
                    url = "/" + url
                path, _, query = url.partition("?")
                headers = Headers({**outer, **(item.get("headers") or {})})
                if path.rstrip("/").lower() == "/$batch":
                    err = bad_request("Nested batch requests are not supported.", "BadRequest")
                    resp = GraphResponse(400, error_body(state, err))
                else:
                    inner = GraphRequest(item["method"].upper(), unquote(path), query, headers, item.get("body"))
                    resp = router.dispatch(inner)
            status_by_id[rid.lower()] = resp.status
            out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("request-id",)}
            entry: dict[str, Any] = {"id": rid, "status": resp.status, "headers": out_headers}
            if resp.body is not None:
                out_headers["Content-Type"] = "text/plain" if isinstance(resp.body, str) else JSON_TYPE
                entry["body"] = resp.body
            responses.append(entry)
        return GraphResponse(200, {"responses": responses})
