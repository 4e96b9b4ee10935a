"""Test doubles for the producers: a scripted Graph, a broker that breaks on cue, and helpers to read what Celery
really wrote to Redis. The Graph fake follows graph_client's signatures so the tests stay valid when the real client
replaces it."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from kombu.exceptions import OperationalError

from shared.errors import NotFound, PermanentError

GRAPH = "https://graph.test/v1.0"
TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
CLIENT_STATE = "s3cret-client-state"


def user(uid: str, **props: Any) -> dict[str, Any]:
    return {"id": uid, **props}


def page(items: list[dict[str, Any]], *, next_link: str | None = None, delta_link: str | None = None) -> dict:
    out: dict[str, Any] = {"value": items}
    if next_link:
        out["@odata.nextLink"] = next_link
    if delta_link:
        out["@odata.deltaLink"] = delta_link
    return out


class FakeGraph:
    """Delta rounds are scripted per (resource, starting link); an Exception in a page list is raised at that point."""

    def __init__(self) -> None:
        self.rounds: dict[tuple[str, str | None], list[dict[str, Any] | Exception]] = {}
        self.delta_calls: list[tuple[str, str | None, list[str] | None]] = []
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_renew: dict[str, Exception] = {}

    # --- delta

    def script(self, resource: str, link: str | None, pages: list[dict[str, Any] | Exception]) -> None:
        self.rounds[(resource, link)] = pages

    def delta_pages(self, resource: str, link: str | None, select: list[str] | None = None):
        self.delta_calls.append((resource, link, select))
        if link and link.startswith(("https://", "http://")) and not link.startswith(GRAPH + "/"):
            raise ValueError(f"refusing a link outside {GRAPH}")  # what the real client does
        for item in self.rounds[(resource, link)]:
            if isinstance(item, Exception):
                raise item
            yield item

    # --- subscriptions

    def create_subscription(self, resource, notification_url, lifecycle_url, client_state, expiration: datetime):
        sub = {
            "id": uuid.uuid4().hex,
            "resource": resource,
            "changeType": "updated,deleted",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "clientState": client_state,
            "expirationDateTime": expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        }
        self.subscriptions[sub["id"]] = sub
        self.calls.append(("create", resource))
        return dict(sub)

    def renew_subscription(self, sub_id: str, expiration: datetime) -> dict[str, Any]:
        self.calls.append(("renew", sub_id))
        if sub_id in self.fail_renew:
            raise self.fail_renew[sub_id]
        if sub_id not in self.subscriptions:
            raise NotFound("subscription not found", service="graph", status=404)
        self.subscriptions[sub_id]["expirationDateTime"] = expiration.astimezone(UTC).isoformat()
        return dict(self.subscriptions[sub_id])

    def reauthorize_subscription(self, sub_id: str) -> None:
        self.calls.append(("reauthorize", sub_id))
        if sub_id not in self.subscriptions:
            raise NotFound("subscription not found", service="graph", status=404)

    def delete_subscription(self, sub_id: str) -> None:
        self.calls.append(("delete", sub_id))
        self.subscriptions.pop(sub_id, None)  # idempotent, like the real client

    def list_subscriptions(self) -> list[dict[str, Any]]:
        self.calls.append(("list", ""))
        return [dict(s) for s in self.subscriptions.values()]


class BreakingSender:
    """Wraps a real Celery app; after `ok` successful publishes every further publish fails like a dead broker."""

    def __init__(self, app: Any, ok: int) -> None:
        self.app = app
        self.ok = ok
        self.sent = 0

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.sent >= self.ok:
            raise OperationalError("Error 111 connecting to redis. Connection refused.")
        self.sent += 1
        return self.app.send_task(name, *args, **kwargs)


def queued(client: Any, queue: str) -> list[dict[str, Any]]:
    """Messages Celery LPUSHed onto `queue`, oldest first: headers plus the decoded event argument."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append({"headers": message["headers"], "event": body[0][0]})
    return out


def permanent(message: str = "bad request") -> PermanentError:
    return PermanentError(message, service="graph", status=400)
