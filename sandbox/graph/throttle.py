"""Resource-unit throttling as Graph's identity and access service does it (https://learn.microsoft.com/graph/throttling-limits).

Graph meters each app+tenant with a token bucket of resource units (RU) per 10 s, plus a separate write bucket per
150 s, so a client that pages fast or writes in bursts gets 429s it must honour. Buckets refill on the sandbox clock
(tests can advance it); a fault rate forces 429s regardless of budget, because real Graph also throttles under
service load. Retry-After is always an integer: MSAL and most SDKs parse only integers.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Any

from sandbox.graph.errors import GraphError

_LOCK = threading.Lock()


@dataclass
class _Bucket:
    tokens: float
    updated: float


def _buckets(state: Any) -> dict[tuple[str, str, str], _Bucket]:
    """Per-state bucket table (kept on the state so two sandboxes in one process stay independent)."""
    table = state.__dict__.get("_graph_throttle_buckets")
    if table is None:
        table = state.__dict__.setdefault("_graph_throttle_buckets", {})
    return table


def _app_id(state: Any, request: Any) -> str:
    claims = getattr(getattr(request, "state", None), "graph_claims", None) or {}
    return str(claims.get("appid") or state.creds.graph_client_id)


def _take(bucket: _Bucket, capacity: float, per_second: float, now: float, cost: float) -> tuple[bool, float]:
    """Refill then try to take `cost`; returns (granted, seconds until it would be granted)."""
    bucket.tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.updated) * per_second)
    bucket.updated = now
    if bucket.tokens >= cost:
        bucket.tokens -= cost
        return True, 0.0
    return False, (cost - bucket.tokens) / per_second if per_second > 0 else 10.0


def request_cost(method: str, base: int, query: dict[str, str]) -> int:
    """Graph's cost modifiers: $select -1, $expand +1, $top < 20 -1, minimum 1."""
    cost = base
    if method == "GET":
        if query.get("$select"):
            cost -= 1
        if query.get("$expand"):
            cost += 1
        top = query.get("$top")
        if top is not None and top.strip().isdigit() and int(top) < 20:
            cost -= 1
    return max(1, cost)


def _too_many(state: Any, app_id: str, retry_after: float, scope: str, info: str) -> GraphError:
    tenant = state.creds.tenant_id
    return GraphError(
        429,
        "TooManyRequests",
        "Please retry again later.",
        headers={
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "x-ms-throttle-scope": f"Tenant_Application/{scope}/{app_id}/{tenant}",
            "x-ms-throttle-information": info,
        },
        inner={"code": "429", "status": "429", "message": "Please retry after"},
    )


def charge(state: Any, request: Any, cost: int, write: bool = False) -> dict[str, str]:
    """Charge one Graph request; return the headers every response carries, or raise the 429 GraphError.

    `request` is anything with `.state.graph_claims` (set by `auth.authorize`) - a Starlette request or a `$batch`
    item - so each batch item is charged on its own, as Graph does.
    """
    app_id = _app_id(state, request)
    tenant = state.creds.tenant_id
    now = state.clock.time()
    rate = float(state.faults.get("graph.throttle_rate", 0.0) or 0.0)
    paths = state.faults.get("graph.throttle_paths", []) or []
    if paths:  # a fault aimed at some endpoints only (e.g. invitations), the rest of Graph answering normally
        path = str(getattr(request, "path", None) or getattr(getattr(request, "url", None), "path", "") or "")
        path = path.removeprefix("/v1.0")
        rate = rate if any(path.lower().startswith(str(p).lower()) for p in paths) else 0.0
    if rate > 0 and random.random() < rate:
        after = float(state.faults.get("graph.throttle_retry_after_s", 2) or 1)
        raise _too_many(state, app_id, after, "ReadWrite" if write else "Read", "ResourceUnitLimitExceeded")
    ru_capacity = float(state.config.get("graph.ru_per_10s", 8000))
    w_capacity = float(state.config.get("graph.write_per_150s", 3000))
    with _LOCK:
        table = _buckets(state)
        ru = table.setdefault(("ru", app_id, tenant), _Bucket(ru_capacity, now))
        ok, wait = _take(ru, ru_capacity, ru_capacity / 10.0, now, cost)
        if not ok:
            raise _too_many(state, app_id, wait, "Read" if not write else "ReadWrite", "ResourceUnitLimitExceeded")
        if write:
            wb = table.setdefault(("write", app_id, tenant), _Bucket(w_capacity, now))
            ok, wait = _take(wb, w_capacity, w_capacity / 150.0, now, 1)
            if not ok:
                ru.tokens += cost  # the read budget was not used by a rejected write
                raise _too_many(state, app_id, wait, "Write", "WriteLimitExceeded")
        used = 1.0 - ru.tokens / ru_capacity if ru_capacity > 0 else 1.0
    headers = {"x-ms-resource-unit": str(cost)}
    if used > 0.8:
        headers["x-ms-throttle-limit-percentage"] = f"{min(1.8, used):.1f}"
    return headers


def reset(state: Any) -> None:
    """Refill every bucket (control API / tests)."""
    with _LOCK:
        _buckets(state).clear()
