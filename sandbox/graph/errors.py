"""Graph-shaped errors.

Every Graph failure - from auth, throttling, a bad `$filter` or a missing object - must reach the client in the one
JSON shape real Graph uses, because client libraries and the product branch on `error.code` and read
`innerError.request-id`. Handlers raise `GraphError`; the route wrapper turns it into that shape.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import JSONResponse


class GraphError(Exception):
    """A failed Graph call: HTTP status, Graph error code, human message and optional extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        inner: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        #: extra innerError members (a 429 carries code/status/message there)
        self.inner = dict(inner or {})


def not_found(object_id: str) -> GraphError:
    """Graph's wording for a missing directory object (clients match on the code, people read the message)."""
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not present.",
    )


def bad_request(message: str, code: str = "Request_BadRequest") -> GraphError:
    return GraphError(400, code, message)


def error_body(state: Any, err: GraphError, client_request_id: str | None = None) -> dict[str, Any]:
    """The `{"error": {...}}` document; also used for failed items inside a `$batch` response."""
    request_id = str(uuid.uuid4())
    inner: dict[str, Any] = {
        "date": state.clock.now().strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id or request_id,
    }
    inner.update(err.inner)
    return {"error": {"code": err.code, "message": err.message, "innerError": inner}}


def graph_error_response(state: Any, err: GraphError, client_request_id: str | None = None) -> JSONResponse:
    headers = dict(err.headers)
    body = error_body(state, err, client_request_id)
    headers.setdefault("request-id", body["error"]["innerError"]["request-id"])
    headers.setdefault("client-request-id", body["error"]["innerError"]["client-request-id"])
    return JSONResponse(body, status_code=err.status, headers=headers)
