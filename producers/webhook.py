"""The Graph webhook receiver (ASGI): validation handshakes, change notifications, lifecycle notifications.

The one promise this module keeps: **202 only when every valid event of the request is in Redis.** Graph retries a 5xx
for up to four hours (docs/decisions.md#change-notifications), so when the broker is down we answer 503 and let Graph
hold the notification for us, instead of acknowledging something we did not store. Everything else serves that promise
within Graph's 3-second deadline: the blocking Celery publish runs in a worker thread under a timeout shorter than the
deadline, and slow follow-up work (lifecycle reauthorization) runs after the reply.

Why a forged clientState still gets 202: Microsoft's advice is that a caller without the secret learns nothing from
our answer; the item is dropped, counted and logged (without the value).

The endpoint is on the internet, so it is built to take abuse without passing it on: only JSON bodies (415 otherwise),
at most `MAX_ITEMS_PER_REQUEST` items, only items naming a subscription we created, one hint per user while a
revocation task for that user still waits (shared.dispatch.PendingWork), and any body at all is answered with a 4xx
rather than a 5xx. Logs get one bounded summary line per request, never a line per attacker-supplied item, and the
Prometheus metrics are served on a separate port (`serve_metrics`), not on this public listener.
"""

from __future__ import annotations

import hmac
import json
import re
from collections import Counter as Tally
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from prometheus_client import start_http_server
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from producers.known_subscriptions import KnownSubscriptions
from producers.notification_schema import (
    ChangeNotification,
    ChangeNotificationBatch,
    LifecycleNotificationBatch,
    ValidationError,
    describe_error,
)
from producers.subscriptions import SubscriptionManager
from shared.dispatch import COLLAPSED, PendingWork, TaskSender, lane_of, publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.logging import get_logger
from shared.metrics import WebhookMetrics  # defined with every other metric; re-exported here
from shared.settings import Settings

log = get_logger(__name__)

#: Graph's tokens are short opaque strings; anything longer is not a handshake we want to echo.
MAX_VALIDATION_TOKEN = 1024
#: Graph gives up after 3 s (docs/decisions.md#change-notifications); publishing gets 2.5 s so the 503 still
#: reaches Graph in time.
PUBLISH_TIMEOUT_S = 2.5
HEALTH_TIMEOUT_S = 1.0
#: Items per POST. Microsoft documents no maximum for a change-notification batch: `value` of the
#: changeNotificationCollection is just "the set of notifications being sent to the notification URL"
#: (https://learn.microsoft.com/graph/api/resources/changenotificationcollection), and batches seen in practice hold a
#: handful. 1,000 is far above any real batch yet bounds what one request can make us do; a larger one is refused
#: whole (413), so nothing of it is half-processed.
MAX_ITEMS_PER_REQUEST = 1000
#: Attacker-supplied strings (subscription ids, tenant ids) are cut to this length before they reach a log line.
MAX_LOGGED_CHARS = 200
#: Lifecycle events Graph documents; anything else is counted as "other".
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
#: Enqueued events listed in a request's summary line (for correlation with worker logs); the rest are counted.
LOGGED_EVENTS = 20

#: "Users/{id}", "/users/{id}", "Groups/{id}/members", and the OData key form "Users('{id}')".
#: The id must look like an object id (no dots, slashes or quotes), so it can never become a path in a Graph URL.
_RESOURCE_RE = re.compile(
    r"^/?(?P<type>users|groups)(?:/|\(')(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,127})(?=$|/|'\))", re.IGNORECASE
)

_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}


class BodyTooLarge(Exception):
    pass


def bounded(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """An untrusted value fit for a log line: at most `limit` characters, control and unpaired surrogate
    characters escaped (no forged log lines, no encoding errors in the log handler)."""
    text = str(value)
    cut = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text[:limit])
    return cut + ("..." if len(text) > limit else "")


def is_json(content_type: str | None) -> bool:
    """application/json (any parameters) or a +json type; Graph posts application/json."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass
class RequestSummary:
    """What one request did, for its single log line."""

    received: int = 0
    duplicates: int = 0  # items naming an object already in this request
    collapsed: int = 0  # events absorbed by a revocation task already waiting for the same user
    enqueued: Tally[str] = field(default_factory=Tally)  # per lane
    dropped: Tally[str] = field(default_factory=Tally)  # per reason
    examples: dict[str, str] = field(default_factory=dict)  # first offending value per reason (bounded)
    events: list[dict[str, str]] = field(default_factory=list)

    def drop(self, reason: str, example: str | None = None) -> None:
        self.dropped[reason] += 1
        if example is not None and reason not in self.examples:
            self.examples[reason] = bounded(example)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"received": self.received, "enqueued": dict(self.enqueued),
                               "collapsed": self.collapsed, "duplicates": self.duplicates,
                               "dropped": dict(self.dropped)}
        if self.examples:
            out["examples"] = self.examples
        if self.events:
            out["events"] = self.events
            out["events_not_listed"] = max(0, sum(self.enqueued.values()) - len(self.events))
        return out


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def map_notification(item: ChangeNotification, tenant: str | None = None) -> IdentityEvent | Rejection:
    """Turn one change notification into an event, or say why not. Pure, so it is tested without HTTP.

    `tenant` (the configured tenant id) replaces the notification's spelling of it, so webhook and delta events of
    one tenant carry the same string whatever case Graph used.
    """
    match = _RESOURCE_RE.match(item.resource)
    if match is None:
        return Rejection("unknown_resource", "resource is neither Users/{id} nor Groups/{id}")
    object_id = match["id"]
    change = item.change_type.strip().lower()
    if match["type"].lower() == "users":
        if change in ("updated", "created"):
            kind = EventKind.USER_CHANGED
        elif change == "deleted":
            kind = EventKind.USER_HARD_DELETED
        else:
            return Rejection("unknown_change_type", f"changeType {change!r} is not handled for users")
    else:
        if change not in ("updated", "created", "deleted"):
            return Rejection("unknown_change_type", f"changeType {change!r} is not handled for groups")
        kind = EventKind.GROUP_CHANGED
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant=tenant or item.tenant_id, object_id=object_id)


def client_state_ok(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes, chunk by chunk: a huge body is refused before it is held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class WebhookHandlers:
    def __init__(
        self,
        settings: Settings,
        sender: TaskSender,
        redis: Any,
        subscriptions: SubscriptionManager | None,
        metrics: WebhookMetrics,
        publish_timeout_s: float,
    ) -> None:
        self.settings = settings
        self.sender = sender
        self.redis = redis
        self.subscriptions = subscriptions
        self.metrics = metrics
        self.publish_timeout_s = publish_timeout_s
        self.expected_state = settings.webhook_client_state.get_secret_value()
        self.tenant = (settings.graph_tenant_id or "").lower() or None
        self.known_subscriptions = KnownSubscriptions(redis, settings.graph_tenant_id or "default")
        self.pending = PendingWork(redis)

    # --- shared steps

    def _handshake(self, request: Request, endpoint: str) -> Response | None:
        if "validationToken" not in request.query_params:
            return None
        token = request.query_params["validationToken"]  # already URL-decoded, as Graph requires
        if not token or len(token) > MAX_VALIDATION_TOKEN:
            self.metrics.rejected.labels("bad_validation_token").inc()
            log.warning("webhook_handshake_rejected", endpoint=endpoint, length=len(token))
            return self._error(400, "validationToken must be 1 to 1024 characters")
        self.metrics.handshakes.labels(endpoint).inc()
        log.info("webhook_handshake", endpoint=endpoint)
        # text/plain + nosniff: the token is echoed verbatim, so no browser may ever render it as HTML.
        return PlainTextResponse(token, headers=_SECURITY_HEADERS)

    def _error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=_SECURITY_HEADERS)

    def _reject(self, reason: str, message: str, status: int = 400) -> JSONResponse:
        self.metrics.rejected.labels(reason).inc()
        log.warning("webhook_request_rejected", reason=reason, detail=bounded(message))
        return self._error(status, message)

    def _not_json(self, request: Request) -> JSONResponse | None:
        """415 unless the body is declared JSON (checked after the handshake, which Graph may send as text/plain)."""
        if is_json(request.headers.get("content-type")):
            return None
        return self._reject("content_type", "Content-Type must be application/json", status=415)

    async def _parse(self, request: Request, model: type[Any]) -> Any:
        """The body as `model`, or a JSONResponse saying why not: 413 too large or too many items, 400 anything else
        (not JSON, invalid UTF-8, nested too deep, a number too long to convert, wrong shape). Never a 5xx."""
        limit = self.settings.webhook_max_body_bytes
        try:
            body = await read_body(request, limit)
        except BodyTooLarge:
            return self._reject("too_large", f"body exceeds {limit} bytes", status=413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return self._reject("not_json", "body is not valid JSON")
        items = data.get("value") if isinstance(data, dict) else None
        if isinstance(items, list) and len(items) > MAX_ITEMS_PER_REQUEST:
            return self._reject("too_many_items", f"at most {MAX_ITEMS_PER_REQUEST} notifications per request",
                                status=413)
        try:
            return model.model_validate(data)
        except ValidationError as err:
            return self._reject("schema", f"body is not a Graph notification: {describe_error(err)}")
        except (ValueError, RecursionError):
            return self._reject("schema", "body is not a Graph notification")

    def _distrust(self, client_state: str | None, tenant_id: str, subscription_id: str) -> str | None:
        """Why an item must be dropped (a metrics label), or None. Runs in a worker thread: it may read Redis."""
        if not client_state_ok(client_state, self.expected_state):
            self.metrics.client_state_mismatch.inc()
            return "client_state"
        if self.tenant is not None and tenant_id.lower() != self.tenant:
            return "foreign_tenant"
        if subscription_id not in self.known_subscriptions:
            return "unknown_subscription"
        return None

    def _accept_notifications(self, items: list[ChangeNotification]) -> RequestSummary:
        """Filter, map, collapse and publish; raises when the broker (or Redis) fails, so the caller answers 503."""
        summary = RequestSummary(received=len(items))
        events: dict[tuple[str, str, str], IdentityEvent] = {}
        for item in items:
            reason = self._distrust(item.client_state, item.tenant_id, item.subscription_id)
            if reason is not None:
                # The clientState is never an example: it may be the real secret in a wrong place.
                summary.drop(reason, None if reason == "client_state" else (
                    item.tenant_id if reason == "foreign_tenant" else item.subscription_id))
                continue
            mapped = map_notification(item, self.settings.graph_tenant_id)
            if isinstance(mapped, Rejection):
                summary.drop(mapped.reason, item.resource if mapped.reason == "unknown_resource" else item.change_type)
                continue
            key = (mapped.tenant, mapped.object_id, mapped.kind.value)
            # Graph sends several "updated" items for one change (docs/decisions.md#change-notifications): one
            # hint per object is enough.
            if key in events:
                summary.duplicates += 1
                continue
            events[key] = mapped
        try:
            for event in events.values():
                task = publish(self.sender, event, pending=self.pending)
                if task == COLLAPSED:
                    summary.collapsed += 1
                    self.metrics.collapsed.inc()
                    continue
                lane = lane_of(task)
                summary.enqueued[lane] += 1
                self.metrics.enqueued.labels(lane).inc()
                if len(summary.events) < LOGGED_EVENTS:
                    summary.events.append({"event_id": event.id, "correlation_id": event.correlation_id,
                                           "kind": event.kind.value, "object_id": event.object_id, "task": task})
        finally:
            for reason, count in summary.dropped.items():
                self.metrics.rejected.labels(reason).inc(count)
        return summary

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        """Run blocking Redis/broker work off the event loop, within Graph's deadline; raises on timeout."""
        with anyio.fail_after(self.publish_timeout_s):
            return await anyio.to_thread.run_sync(partial(func, *args), abandon_on_cancel=True)

    # --- endpoints

    async def notifications(self, request: Request) -> Response:
        handshake = self._handshake(request, "notifications")
        if handshake is not None:
            return handshake
        refused = self._not_json(request)
        if refused is not None:
            return refused
        batch = await self._parse(request, ChangeNotificationBatch)
        if isinstance(batch, Response):
            return batch
        self.metrics.received.inc(len(batch.value))
        try:
            summary = await self._in_thread(self._accept_notifications, list(batch.value))
        except Exception as err:  # broker down, too slow, or anything else: Graph must retry
            self.metrics.unavailable.inc()
            log.error("webhook_publish_failed", error=type(err).__name__, received=len(batch.value))
            return self._error(503, "events could not be queued; retry later")
        level = log.warning if summary.dropped else log.info
        level("webhook_notifications", **summary.fields())
        return Response(status_code=202, headers=_SECURITY_HEADERS)

    def _accept_lifecycle(self, items: list[Any]) -> tuple[RequestSummary, list[tuple[str, str]]]:
        summary = RequestSummary(received=len(items))
        accepted: list[tuple[str, str]] = []
        for item in items:
            reason = self._distrust(item.client_state, item.tenant_id, item.subscription_id)
            if reason is not None:
                summary.drop(reason, None if reason == "client_state" else (
                    item.tenant_id if reason == "foreign_tenant" else item.subscription_id))
                continue
            known_event = item.lifecycle_event in LIFECYCLE_EVENTS  # a label per made-up value would grow forever
            self.metrics.lifecycle.labels(item.lifecycle_event if known_event else "other").inc()
            if self.subscriptions is None:
                summary.drop("unhandled")
                continue
            accepted.append((item.subscription_id, item.lifecycle_event))
        for reason, count in summary.dropped.items():
            self.metrics.rejected.labels(reason).inc(count)
        return summary, accepted

    async def lifecycle(self, request: Request) -> Response:
        handshake = self._handshake(request, "lifecycle")
        if handshake is not None:
            return handshake
        refused = self._not_json(request)
        if refused is not None:
            return refused
        batch = await self._parse(request, LifecycleNotificationBatch)
        if isinstance(batch, Response):
            return batch
        self.metrics.received.inc(len(batch.value))
        try:
            summary, accepted = await self._in_thread(self._accept_lifecycle, list(batch.value))
        except Exception as err:  # Redis down: the subscription check cannot run; Graph retries
            self.metrics.unavailable.inc()
            log.error("webhook_lifecycle_check_failed", error=type(err).__name__, received=len(batch.value))
            return self._error(503, "lifecycle notifications could not be checked; retry later")
        background = BackgroundTasks()
        for subscription_id, event in accepted:
            # After the reply: reauthorizing is two Graph calls, far too slow for the 3 s deadline.
            background.add_task(self._handle_lifecycle, subscription_id, event)
        level = log.warning if summary.dropped else log.info
        level("webhook_lifecycle", **summary.fields(),
              lifecycle_events=[(bounded(sub, 64), bounded(event, 64)) for sub, event in accepted[:LOGGED_EVENTS]])
        return Response(status_code=202, headers=_SECURITY_HEADERS, background=background)

    def _handle_lifecycle(self, subscription_id: str, event: str) -> None:
        assert self.subscriptions is not None
        try:
            self.subscriptions.handle_lifecycle(subscription_id, event)
            self.known_subscriptions.invalidate()
        except Exception as err:  # the renewal loop retries; a background failure must not kill the server
            log.error("webhook_lifecycle_failed", subscription_id=bounded(subscription_id),
                      lifecycle_event=bounded(event, 64), error=type(err).__name__, detail=str(err)[:300])

    async def healthz(self, request: Request) -> Response:
        try:
            with anyio.fail_after(HEALTH_TIMEOUT_S):
                await anyio.to_thread.run_sync(self.redis.ping, abandon_on_cancel=True)
        except Exception as err:
            log.warning("webhook_health_failed", error=type(err).__name__)
            return JSONResponse({"status": "unavailable", "redis": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "redis": "up"})


def create_app(
    settings: Settings,
    sender: TaskSender,
    redis: Any,
    subscriptions: SubscriptionManager | None = None,
    *,
    publish_timeout_s: float = PUBLISH_TIMEOUT_S,
    metrics: WebhookMetrics | None = None,
) -> Starlette:
    """Build the webhook ASGI app. `sender` is the Celery app that publishes; `redis` holds the subscription records
    and pending markers and answers /healthz. Metrics are in `app.state.metrics`; serve them with `serve_metrics`."""
    handlers = WebhookHandlers(settings, sender, redis, subscriptions, metrics or WebhookMetrics(), publish_timeout_s)
    app = Starlette(
        routes=[
            Route("/graph/notifications", handlers.notifications, methods=["POST"]),
            Route("/graph/lifecycle", handlers.lifecycle, methods=["POST"]),
            Route("/healthz", handlers.healthz, methods=["GET"]),
        ]
    )
    app.state.metrics = handlers.metrics
    app.state.handlers = handlers
    return app


def serve_metrics(metrics: WebhookMetrics, host: str, port: int) -> Any:
    """Serve `metrics` at http://host:port/metrics from a daemon thread; returns the HTTP server.

    Why a port of its own: the webhook listener faces the internet, and counters of rejections and client-state
    mismatches tell an attacker how their probing goes. Raises OSError when the port is taken.
    """
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
