"""The sandbox's control API and read-only status page, under `/_sandbox/` on the same port as Graph and Salesforce.

Tests and demos need to change behaviour while clients are connected (throttle harder, break Salesforce, jump the
clock a week ahead, accept an invitation as the invited person would). Those switches live here, behind a bearer
token (`IDSYNC_SANDBOX_ADMIN_TOKEN`) so a sandbox bound to a shared interface cannot be steered by anyone who finds
the port. Changes go straight into the shared `Tunables`, which every other module reads per request, so they take
effect for the next request without a restart.
"""

from __future__ import annotations

import hmac
import html
import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.config import DEFAULT_CONFIG, DEFAULT_FAULTS, Tunables
from sandbox.state import SandboxState

#: the Salesforce failure modes `salesforce.error_kinds` may name (see docs/sandbox.md)
SALESFORCE_ERROR_KINDS = frozenset({"503", "UNABLE_TO_LOCK_ROW", "timeout", "reset"})
#: settings that size pages or batches: zero would make a client loop forever, so they must be >= 1
_AT_LEAST_ONE = frozenset({"delta_page_size", "group_members_page_size", "query_batch_size",
                           "bulk_query_default_max_records"})
_PAGE_SIZE_DEFAULT = 50
_PAGE_SIZE_MAX = 500


class _JSON(JSONResponse):
    """JSON that tolerates datetimes and other odd values in activity records instead of failing the page."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error(status: int, code: str, message: str) -> _JSON:
    return _JSON({"error": {"code": code, "message": message}}, status_code=status)


# --------------------------------------------------------------------------------------------------------------
# validation shared with the command line (`--set`, `--fault`)
# --------------------------------------------------------------------------------------------------------------


def _check_value(section: str, key: str, value: Any, default: Any) -> Any:
    """Check one value against the type of its default, so a typo'd string can't crash the module that reads it."""
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number")
        if isinstance(default, int) and not isinstance(value, int):
            if not float(value).is_integer():
                raise ValueError(f"{name} must be an integer")
            value = int(value)
        if value < 0:
            raise ValueError(f"{name} must not be negative")
        if key.endswith("_rate") and value > 1:
            raise ValueError(f"{name} is a share between 0 and 1")
        if key in _AT_LEAST_ONE and value < 1:
            raise ValueError(f"{name} must be at least 1")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if name == "salesforce.validation_rules":
        return _validation_rules(value)
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings")
        if name == "salesforce.error_kinds":
            unknown = [v for v in value if v not in SALESFORCE_ERROR_KINDS]
            if unknown:
                allowed = ", ".join(sorted(SALESFORCE_ERROR_KINDS))
                raise ValueError(f"{name}: unknown kind {unknown[0]!r} (allowed: {allowed})")
            if not value:
                raise ValueError(f"{name} must name at least one kind")
        return list(value)
    return value


_RULE_KEYS = {"object", "field", "pattern", "blank", "message", "name"}


def _validation_rules(value: Any) -> list[Any]:
    """`salesforce.validation_rules`: a list of {object, field, pattern | blank, message[, name]} or of the short form
    "Object.Field=Value"."""

    name = "salesforce.validation_rules"
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of rules")
    rules: list[Any] = []
    for n, rule in enumerate(value):
        where = f"{name}[{n}]"
        if isinstance(rule, str):  # the short form: "Object.Field=Value"
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*=.*", rule):
                raise ValueError(f"{where}: {rule!r} is not Object.Field=Value")
            rules.append(rule)
            continue
        if not isinstance(rule, dict):
            raise ValueError(f"{where} must be an object or Object.Field=Value")
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
        for key in ("object", "field", "message"):
            if not isinstance(rule.get(key), str) or not rule[key]:
                raise ValueError(f"{where}.{key} must be a non-empty string")
        if ("pattern" in rule) == bool(rule.get("blank")):
            raise ValueError(f"{where} needs exactly one of pattern or blank: true")
        if "pattern" in rule:
            try:
                re.compile(str(rule["pattern"]))
            except re.error as err:
                raise ValueError(f"{where}.pattern: {err}") from None
        rules.append(dict(rule))
    return rules


def validate_patch(defaults: dict[str, dict[str, Any]], patch: Any) -> dict[str, dict[str, Any]]:
    """Check a JSON merge patch against the known settings and return it ready for `Tunables.patch`.

    `null` means "back to the default" rather than RFC 7386's "remove": a removed setting would leave the reading
    module without a value. Raises ValueError whose message names the offending key.
    """
    if not isinstance(patch, dict):
        raise ValueError("the body must be a JSON object, e.g. {\"graph\": {\"delta_page_size\": 50}}")
    clean: dict[str, dict[str, Any]] = {}
    for section, values in patch.items():
        if section not in defaults:
            raise ValueError(f"unknown section {section!r} (known: {', '.join(sorted(defaults))})")
        if not isinstance(values, dict):
            raise ValueError(f"{section!r} must be an object")
        clean[section] = {}
        for key, value in values.items():
            if key not in defaults[section]:
                raise ValueError(f"unknown setting {section}.{key}")
            default = defaults[section][key]
            clean[section][key] = default if value is None else _check_value(section, key, value, default)
    return clean


def apply_patch(tunables: Tunables, defaults: dict[str, dict[str, Any]], patch: Any) -> dict[str, Any]:
    """Validate, then apply; returns the complete new settings."""
    return tunables.patch(validate_patch(defaults, patch))


def parse_assignment(text: str, defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """`graph.ru_per_10s=100` -> `{"graph": {"ru_per_10s": 100}}`; the value is JSON when it parses, else a string.

    For list settings a bare `503` or `503,timeout` becomes a list of strings, because that is what a person typing a
    command line means and JSON would read `503` as a number.
    """
    dotted, sep, raw = text.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ValueError(f"expected SECTION.KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    default = (defaults or {}).get(section, {}).get(key)
    if isinstance(default, list) and not isinstance(value, list):
        value = [v.strip() for v in raw.split(",") if v.strip()]
    return {section: {key: value}}


# --------------------------------------------------------------------------------------------------------------
# reading the other modules' stores for the page
# --------------------------------------------------------------------------------------------------------------


def _records(container: Any) -> list[dict[str, Any]]:
    if container is None:
        return []
    values = container.values() if isinstance(container, dict) else container
    return [v if isinstance(v, dict) else dict(vars(v)) for v in values]


def _matches(record: dict[str, Any], fields: Iterable[str], needle: str) -> bool:
    return not needle or any(needle in str(record.get(f) or "").lower() for f in fields)


def _page(records: list[dict[str, Any]], fields: tuple[str, ...], q: str, page: int, size: int) -> dict[str, Any]:
    needle = q.strip().lower()
    hits = [r for r in records if _matches(r, fields, needle)]
    start = page * size
    return {"total": len(records), "matching": len(hits), "items": hits[start : start + size]}


def _entra_users(state: SandboxState) -> list[dict[str, Any]]:
    directory = state.directory
    with state.lock:
        return _records(getattr(directory, "users", None))


def _salesforce_users(state: SandboxState) -> list[dict[str, Any]]:
    """User rows with `IsFrozen` filled in: real Salesforce keeps it on the user's UserLogin record, not on User."""
    org = state.org
    if org is None:
        return []
    with state.lock:
        if hasattr(org, "records"):
            users = [dict(u) for u in org.records("User")]
        else:
            users = _records(getattr(org, "users", None))
        logins = getattr(org, "user_login", None)
        if isinstance(logins, dict) and hasattr(org, "get"):
            for user in users:
                login_id = logins.get(user.get("Id"))
                found = org.get(login_id) if login_id else None
                if found is not None and "IsFrozen" not in user:
                    user["IsFrozen"] = found[1].get("IsFrozen")
    return users


def _salesforce_usage(state: SandboxState) -> dict[str, Any]:
    """Daily API requests used against the limit, as Salesforce's `Sforce-Limit-Info` header reports them."""
    org = state.org
    usage = getattr(org, "api_usage", None) if org is not None else None
    used = usage(state.clock.time()) if callable(usage) else None
    return {"used (last 24 h)": used, "limit": state.config.get("salesforce.daily_api_limit")}


# --------------------------------------------------------------------------------------------------------------
# the HTML page
# --------------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;font-size:.9rem}
th{background:#f3f3f3}
.off{color:#a00}.on{color:#070}
pre{background:#f6f6f6;padding:.5rem;overflow:auto}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _flag(value: Any) -> str:
    if value is None:
        return ""
    return '<span class="on">yes</span>' if value else '<span class="off">no</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Cells arrive already escaped (so `_flag` markup survives); headers are escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pager(prefix: str, params: dict[str, Any], page: int, size: int, matching: int) -> str:
    links = []
    pages = max(1, math.ceil(matching / size))
    for label, target in (("« prev", page - 1), ("next »", page + 1)):
        if 0 <= target < pages:
            query = {k: v for k, v in params.items() if v not in (None, "")}
            query[f"{prefix}page"] = target
            links.append(f'<a href="?{_e(urlencode(query))}">{_e(label)}</a>')
    return f"<p>page {page + 1} of {pages} {' '.join(links)}</p>"


def render_page(state: SandboxState, *, q: str, page: int, size: int, token: str | None) -> str:
    """The whole status page; every value from a store or a client passes through html.escape."""
    entra = _page(_entra_users(state), ("displayName", "userPrincipalName", "mail", "id"), q, page, size)
    sf = _page(_salesforce_users(state), ("Username", "Name", "Email", "Id", "FederationIdentifier"), q, page, size)
    params = {"token": token, "q": q, "size": size}
    entra_rows = [
        [
            _e(u.get("id")),
            _e(u.get("displayName")),
            _e(u.get("userPrincipalName")),
            _e(u.get("userType")),
            _flag(u.get("accountEnabled")),
        ]
        for u in entra["items"]
    ]
    sf_rows = [
        [
            _e(u.get("Id")),
            _e(u.get("Username")),
            _e(u.get("Email")),
            _e(u.get("FederationIdentifier")),
            _flag(u.get("IsActive")),
            _flag(u.get("IsFrozen")),
        ]
        for u in sf["items"]
    ]
    deliveries = state.activity.recent("webhook_delivery", limit=25)
    delivery_columns = ["url", "status", "subscription_id", "change_type", "notifications", "attempt", "duration_ms"]
    delivery_rows = [[_e(d.get(c)) for c in delivery_columns] for d in reversed(deliveries)]
    endpoint_stats = getattr(state.notifier, "endpoint_stats", None)
    endpoints = endpoint_stats() if callable(endpoint_stats) else {}
    endpoint_columns = ["state", "delivered", "failed_attempts", "dropped", "pending", "slow_pct", "last_status"]
    endpoint_rows = [[_e(url)] + [_e(st.get(c)) for c in endpoint_columns] for url, st in sorted(endpoints.items())]
    counters = dict(state.activity.counters)
    usage = _salesforce_usage(state)
    search = (
        '<form method="get">'
        + (f'<input type="hidden" name="token" value="{_e(token)}">' if token else "")
        + f'<input name="q" value="{_e(q)}" placeholder="search name, username, mail">'
        + f'<input type="hidden" name="size" value="{_e(size)}"> <button>search</button></form>'
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>idsync sandbox</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>idsync sandbox</h1>",
        f"<p>base URL {_e(state.base_url)} · tenant {_e(state.creds.tenant_id)} · "
        f"sandbox clock {_e(state.clock.iso())} (offset {_e(round(state.clock.offset, 3))} s)</p>",
        search,
        f"<h2>Entra users ({_e(entra['matching'])} of {_e(entra['total'])})</h2>",
        _table(["id", "displayName", "userPrincipalName", "userType", "accountEnabled"], entra_rows),
        _pager("", params, page, size, entra["matching"]),
        f"<h2>Salesforce users ({_e(sf['matching'])} of {_e(sf['total'])})</h2>",
        _table(["Id", "Username", "Email", "FederationIdentifier", "IsActive", "IsFrozen"], sf_rows),
        _pager("", params, page, size, sf["matching"]),
        "<h2>Recent webhook deliveries (newest first)</h2>",
        _table(delivery_columns, delivery_rows) if delivery_rows else "<p>none yet</p>",
        "<h2>Webhook endpoints</h2>",
        _table(["url", *endpoint_columns], endpoint_rows) if endpoint_rows else "<p>none yet</p>",
        "<h2>API usage</h2>",
        _table(["counter", "value"], [[_e(k), _e(v)] for k, v in sorted(counters.items())]),
        _table(["Salesforce daily API requests", "value"], [[_e(k), _e(v)] for k, v in usage.items()]),
        "<h2>Config</h2>",
        f"<pre>{_e(json.dumps(state.config.snapshot(), indent=2, default=str))}</pre>",
        "<h2>Faults</h2>",
        f"<pre>{_e(json.dumps(state.faults.snapshot(), indent=2, default=str))}</pre>",
        "</body></html>",
    ]
    return "".join(parts)


# --------------------------------------------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        value = default
    return max(lo, min(hi, value))


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise ValueError("a JSON body is required")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not valid JSON: {exc.msg}") from exc


def install(state: SandboxState) -> list[BaseRoute]:
    """Build the `/_sandbox/...` routes bound to this sandbox's state."""

    def presented_token(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.query_params.get("token") or None

    def authorized(request: Request) -> bool:
        token = presented_token(request)
        return token is not None and hmac.compare_digest(token.encode(), state.creds.admin_token.encode())

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                response = _error(401, "unauthorized", "send the sandbox admin token as 'Authorization: Bearer <token>'"
                                  " (IDSYNC_SANDBOX_ADMIN_TOKEN) or as ?token=")
                response.headers["WWW-Authenticate"] = 'Bearer realm="idsync-sandbox"'
                return response
            try:
                return await handler(request)
            except ValueError as exc:
                return _error(400, "invalid_request", str(exc))

        return endpoint

    async def health(request: Request) -> Response:
        """Unauthenticated liveness probe: says nothing but that the server answers."""
        return _JSON({"status": "ok"})

    async def page(request: Request) -> Response:
        size = _int_param(request, "size", _PAGE_SIZE_DEFAULT, 1, _PAGE_SIZE_MAX)
        number = _int_param(request, "page", 0, 0, 10**9)
        q = request.query_params.get("q", "")
        token = request.query_params.get("token")
        text = await run_in_threadpool(render_page, state, q=q, page=number, size=size, token=token)
        return HTMLResponse(text, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    def tunables_routes(name: str, tunables: Tunables, defaults: dict[str, dict[str, Any]]) -> list[BaseRoute]:
        async def get(request: Request) -> Response:
            return _JSON(tunables.snapshot())

        async def patch(request: Request) -> Response:
            return _JSON(apply_patch(tunables, defaults, await _json_body(request)))

        return [
            Route(f"/_sandbox/{name}", guarded(get), methods=["GET"]),
            Route(f"/_sandbox/{name}", guarded(patch), methods=["PATCH"]),
        ]

    def clock_view() -> dict[str, Any]:
        return {"now": state.clock.iso(), "time": state.clock.time(), "offset_s": state.clock.offset}

    async def get_clock(request: Request) -> Response:
        return _JSON(clock_view())

    async def advance_clock(request: Request) -> Response:
        body = await _json_body(request)
        seconds = body.get("advance_s") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ValueError('expected {"advance_s": <seconds>}')
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward (advance_s must be >= 0)")
        state.clock.advance(seconds)
        return _JSON(clock_view())

    async def activity(request: Request) -> Response:
        kind = request.query_params.get("kind") or None
        limit = _int_param(request, "limit", 100, 1, 500)
        return _JSON({"items": state.activity.recent(kind, limit=limit), "counters": dict(state.activity.counters)})

    async def call_hook(owner: Any, owner_name: str, method: str, *args: Any) -> Response:
        """Call a test hook on another module's object, translating its errors into control-API errors.

        501 if that module doesn't offer the hook (yet); the module's own 4xx (e.g. Graph's 404 for an unknown user,
        400 for an invitation that is not pending) keeps its status, code and message; `False` means "no such id".
        """
        fn = getattr(owner, method, None)
        if fn is None:
            return _error(501, "not_implemented", f"this sandbox's {owner_name} has no {method}()")
        try:
            result = await run_in_threadpool(fn, *args)
        except KeyError as exc:
            return _error(404, "not_found", f"no such object: {exc.args[0] if exc.args else args[0]}")
        except Exception as exc:
            status = getattr(exc, "status", None)
            if not isinstance(status, int) or not 400 <= status < 500:
                raise
            code = getattr(exc, "code", None) or getattr(exc, "error_code", None) or "invalid_request"
            return _error(status, str(code), str(getattr(exc, "message", None) or exc))
        if result is False:
            return _error(404, "not_found", f"{owner_name} has no usable object {args[0]!r}")
        if isinstance(result, dict):
            return _JSON(result)
        return _JSON({"ok": True, "id": args[0]})

    async def accept_invitation(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        return await call_hook(state.directory, "directory", "accept_invitation", user_id)

    async def set_blocker(request: Request) -> Response:
        body = await _json_body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason:
            raise ValueError('expected {"reason": "..."}')
        user_id = request.path_params["id"]
        return await call_hook(state.org, "Salesforce org", "set_deactivation_blocker", user_id, reason)

    async def clear_blocker(request: Request) -> Response:
        return await call_hook(state.org, "Salesforce org", "set_deactivation_blocker", request.path_params["id"], None)

    async def list_blockers(request: Request) -> Response:
        """Which users Salesforce would refuse to deactivate, and why (what Setup shows an admin)."""
        org = state.org
        if org is None:
            return _error(503, "not_ready", "the Salesforce org is not installed")
        with state.lock:
            return _JSON(dict(org.deactivation_blockers))

    async def reauthorize(request: Request) -> Response:
        sub_id = request.path_params["id"]
        return await call_hook(state.notifier, "notifier", "trigger_reauthorization", sub_id)

    async def remove_subscription(request: Request) -> Response:
        sub_id = request.path_params["id"]
        return await call_hook(state.notifier, "notifier", "trigger_removal", sub_id)

    async def reset(request: Request) -> Response:
        """Clock, config, faults and subscriptions back to how the sandbox started; directory and org data stay."""
        state.clock.reset()
        state.config.reset()
        state.faults.reset()
        removed = state.notifier.reset() if state.notifier is not None else 0
        state.activity.add("sandbox_reset", subscriptions_removed=removed)
        return _JSON({"clock": clock_view(), "subscriptions_removed": removed})

    return [
        Route("/_sandbox/health", health, methods=["GET"]),
        Route("/_sandbox/", guarded(page), methods=["GET"]),
        Route("/_sandbox", guarded(page), methods=["GET"]),
        *tunables_routes("config", state.config, DEFAULT_CONFIG),
        *tunables_routes("faults", state.faults, DEFAULT_FAULTS),
        Route("/_sandbox/clock", guarded(get_clock), methods=["GET"]),
        Route("/_sandbox/clock", guarded(advance_clock), methods=["POST"]),
        Route("/_sandbox/activity", guarded(activity), methods=["GET"]),
        Route("/_sandbox/graph/invitations/{user_id}/accept", guarded(accept_invitation), methods=["POST"]),
        Route("/_sandbox/salesforce/deactivation-blockers", guarded(list_blockers), methods=["GET"]),
        Route("/_sandbox/salesforce/users/{id}/deactivation-blocker", guarded(set_blocker), methods=["PUT"]),
        Route("/_sandbox/salesforce/users/{id}/deactivation-blocker", guarded(clear_blocker), methods=["DELETE"]),
        Route("/_sandbox/graph/subscriptions/{id}/reauthorize-required", guarded(reauthorize), methods=["POST"]),
        Route("/_sandbox/graph/subscriptions/{id}/remove", guarded(remove_subscription), methods=["POST"]),
        Route("/_sandbox/reset", guarded(reset), methods=["POST"]),
    ]
