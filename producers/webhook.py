"""The Graph webhook receiver (ASGI): validation handshakes, change notifications, lifecycle notifications.

The one promise this module keeps: **202 only when every valid event of the request is in Redis.** Graph retries a
5xx for up to four hours (graph.md §2.4), so when the broker is down we answer 503 and let Graph hold the
notification for us, instead of acknowledging something we did not store. Everything else serves that promise within
Graph's 3-second deadline: the blocking Celery publish runs in a worker thread under a timeout shorter than the
deadline, and slow follow-up work (lifecycle reauthorization) runs after the reply.

Why a forged clientState still gets 202: Microsoft's advice is that a caller without the secret learns nothing from
our answer; the item is dropped, counted and logged (without the value).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from producers.notification_schema import (
    ChangeNotification,
    ChangeNotificationBatch,
    LifecycleNotificationBatch,
    ValidationError,
    describe_error,
)
from producers.subscriptions import SubscriptionManager
from shared.dispatch import TaskSender, publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.logging import get_logger
from shared.metrics import WebhookMetrics  # defined with every other metric; re-exported here
from shared.settings import Settings

log = get_logger(__name__)

#: Graph's tokens are short opaque strings; anything longer is not a handshake we want to echo.
MAX_VALIDATION_TOKEN = 1024
#: Graph gives up after 3 s (graph.md §2.4); publishing gets 2.5 s so the 503 still reaches Graph in time.
PUBLISH_TIMEOUT_S = 2.5
HEALTH_TIMEOUT_S = 1.0

#: "Users/{id}", "/users/{id}", "Groups/{id}/members", and the OData key form "Users('{id}')".
#: The id must look like an object id (no dots, slashes or quotes), so it can never become a path in a Graph URL.
_RESOURCE_RE = re.compile(
    r"^/?(?P<type>users|groups)(?:/|\(')(?P<id>[A-Za-z0-9][A-Za-z0-9_-]{0,127})(?=$|/|'\))", re.IGNORECASE
)

_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}


class BodyTooLarge(Exception):
    pass


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
        log.warning("webhook_request_rejected", reason=reason, detail=message)
        return self._error(status, message)

    async def _parse(self, request: Request, model: type[Any]) -> Any:
        """The body as `model`, or a JSONResponse saying why not (413 too large, 400 not JSON / wrong shape)."""
        limit = self.settings.webhook_max_body_bytes
        try:
            body = await read_body(request, limit)
        except BodyTooLarge:
            return self._reject("too_large", f"body exceeds {limit} bytes", status=413)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._reject("not_json", "body is not valid JSON")
        try:
            return model.model_validate(data)
        except ValidationError as err:
            return self._reject("schema", f"body is not a Graph notification: {describe_error(err)}")

    def _trusted(self, client_state: str | None, tenant_id: str, subscription_id: str) -> bool:
        if not client_state_ok(client_state, self.expected_state):
            self.metrics.client_state_mismatch.inc()
            self.metrics.rejected.labels("client_state").inc()
            log.warning("webhook_client_state_mismatch", subscription_id=subscription_id, tenant=tenant_id)
            return False
        if self.tenant is not None and tenant_id.lower() != self.tenant:
            self.metrics.rejected.labels("foreign_tenant").inc()
            log.warning("webhook_foreign_tenant", subscription_id=subscription_id, tenant=tenant_id)
            return False
        return True

    def _publish_all(self, events: Iterable[IdentityEvent]) -> list[str]:
        return [publish(self.sender, event) for event in events]

    # --- endpoints

    async def notifications(self, request: Request) -> Response:
        handshake = self._handshake(request, "notifications")
        if handshake is not None:
            return handshake
        batch = await self._parse(request, ChangeNotificationBatch)
        if isinstance(batch, Response):
            return batch
        self.metrics.received.inc(len(batch.value))
        events: dict[tuple[str, str, str], IdentityEvent] = {}
        for item in batch.value:
            if not self._trusted(item.client_state, item.tenant_id, item.subscription_id):
                continue
            mapped = map_notification(item, self.settings.graph_tenant_id)
            if isinstance(mapped, Rejection):
                self.metrics.rejected.labels(mapped.reason).inc()
                log.warning("webhook_item_rejected", reason=mapped.reason, detail=mapped.message,
                            subscription_id=item.subscription_id)
                continue
            # Graph sends several "updated" items for one change (graph.md §2.3): one hint per object is enough.
            events.setdefault((mapped.tenant, mapped.object_id, mapped.kind.value), mapped)
        if events:
            try:
                with anyio.fail_after(self.publish_timeout_s):
                    tasks = await anyio.to_thread.run_sync(
                        partial(self._publish_all, list(events.values())), abandon_on_cancel=True
                    )
            except Exception as err:  # broker down, too slow, or anything else: Graph must retry
                self.metrics.unavailable.inc()
                log.error("webhook_publish_failed", error=type(err).__name__, events=len(events))
                return self._error(503, "events could not be queued; retry later")
            for event, task in zip(events.values(), tasks, strict=True):
                lane = task.split(".", 1)[0]
                self.metrics.enqueued.labels(lane).inc()
                log.info("webhook_event_enqueued", event_id=event.id, correlation_id=event.correlation_id,
                         kind=event.kind.value, object_id=event.object_id, task=task)
        return Response(status_code=202, headers=_SECURITY_HEADERS)

    async def lifecycle(self, request: Request) -> Response:
        handshake = self._handshake(request, "lifecycle")
        if handshake is not None:
            return handshake
        batch = await self._parse(request, LifecycleNotificationBatch)
        if isinstance(batch, Response):
            return batch
        self.metrics.received.inc(len(batch.value))
        background = BackgroundTasks()
        for item in batch.value:
            if not self._trusted(item.client_state, item.tenant_id, item.subscription_id):
                continue
            self.metrics.lifecycle.labels(item.lifecycle_event).inc()
            log.info("webhook_lifecycle_event", subscription_id=item.subscription_id,
                     lifecycle_event=item.lifecycle_event)
            if self.subscriptions is None:
                log.warning("webhook_lifecycle_unhandled", subscription_id=item.subscription_id)
                continue
            # After the reply: reauthorizing is two Graph calls, far too slow for the 3 s deadline.
            background.add_task(self._handle_lifecycle, item.subscription_id, item.lifecycle_event)
        return Response(status_code=202, headers=_SECURITY_HEADERS, background=background)

    def _handle_lifecycle(self, subscription_id: str, event: str) -> None:
        assert self.subscriptions is not None
        try:
            self.subscriptions.handle_lifecycle(subscription_id, event)
        except Exception as err:  # the renewal loop retries; a background failure must not kill the server
            log.error("webhook_lifecycle_failed", subscription_id=subscription_id, lifecycle_event=event,
                      error=type(err).__name__, detail=str(err)[:300])

    async def healthz(self, request: Request) -> Response:
        try:
            with anyio.fail_after(HEALTH_TIMEOUT_S):
                await anyio.to_thread.run_sync(self.redis.ping, abandon_on_cancel=True)
        except Exception as err:
            log.warning("webhook_health_failed", error=type(err).__name__)
            return JSONResponse({"status": "unavailable", "redis": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "redis": "up"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    settings: Settings,
    sender: TaskSender,
    redis: Any,
    subscriptions: SubscriptionManager | None = None,
    *,
    publish_timeout_s: float = PUBLISH_TIMEOUT_S,
    metrics: WebhookMetrics | None = None,
) -> Starlette:
    """Build the webhook ASGI app. `sender` is the Celery app that publishes; `redis` is used for /healthz."""
    handlers = WebhookHandlers(settings, sender, redis, subscriptions, metrics or WebhookMetrics(), publish_timeout_s)
    app = Starlette(
        routes=[
            Route("/graph/notifications", handlers.notifications, methods=["POST"]),
            Route("/graph/lifecycle", handlers.lifecycle, methods=["POST"]),
            Route("/healthz", handlers.healthz, methods=["GET"]),
            Route("/metrics", handlers.metrics_endpoint, methods=["GET"]),
        ]
    )
    app.state.metrics = handlers.metrics
    app.state.handlers = handlers
    return app
