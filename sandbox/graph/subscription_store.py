"""Graph change-notification subscriptions: the records, their JSON form and resource matching
(https://learn.microsoft.com/graph/api/resources/subscription).

Kept apart from the routes and from delivery so both the HTTP handlers and the notifier thread read one source of
truth. Every method expects the caller to hold `state.lock`; nothing here does I/O, so holding it is cheap.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: resources Graph accepts for users and groups, case-insensitive, leading slash optional
_RESOURCE_RE = re.compile(
    r"^/?(?P<kind>users|groups)(?:/(?P<id>[^/?#]+)(?:/(?P<nav>members|owners))?)?/?$",
    re.IGNORECASE,
)
_ISO_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)

ALLOWED_CHANGE_TYPES = ("created", "updated", "deleted")
MAX_CLIENT_STATE = 128


@dataclass(frozen=True)
class ResourceSpec:
    """A parsed subscription resource: which collection, optionally one object, optionally its members/owners."""

    kind: str  # "users" | "groups"
    object_id: str | None = None
    nav: str | None = None  # "members" | "owners" (groups only)

    def matches(self, kind: str, object_id: str) -> bool:
        """Does a directory change on `kind`/`object_id` concern this subscription?

        `/groups/{id}/members` fires on changes of that group: the directory reports membership edits as changes of
        the group, and the sandbox does not tell member edits from property edits (clients re-read with delta anyway).
        """
        if kind != self.kind:
            return False
        return self.object_id is None or self.object_id.lower() == object_id.lower()


def parse_resource(resource: str) -> ResourceSpec | None:
    """Parse a Graph subscription resource, or None if users/groups subscriptions can't use it."""
    m = _RESOURCE_RE.match(resource.strip())
    if not m:
        return None
    kind = m.group("kind").lower()
    nav = m.group("nav").lower() if m.group("nav") else None
    if nav and kind != "groups":
        return None
    object_id = m.group("id")
    if object_id and object_id.lower() == "delta":
        return None
    return ResourceSpec(kind=kind, object_id=object_id, nav=nav)


def parse_datetime(value: Any) -> float | None:
    """Parse Graph's ISO 8601 timestamps (up to 7 fractional digits, `Z` or an offset; no zone = UTC) to epoch."""
    if not isinstance(value, str):
        return None
    m = _ISO_RE.match(value.strip())
    if not m:
        return None
    frac = (m.group("frac") or "0")[:6].ljust(6, "0")
    tz = m.group("tz") or "Z"
    tz = "+00:00" if tz.upper() == "Z" else (tz if ":" in tz else tz[:3] + ":" + tz[3:])
    try:
        dt = datetime.fromisoformat(f"{m.group('date')}T{m.group('time')}.{frac}{tz}")
    except ValueError:
        return None
    return dt.timestamp()


def format_graph_datetime(epoch: float) -> str:
    """The subscription resource's form, 7 fractional digits: 2016-11-20T18:23:45.9356913Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def format_notification_datetime(epoch: float) -> str:
    """The change-notification payload's form (as in Microsoft's example): 2016-03-19T22:11:09.952Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Subscription:
    """One subscription, with the sandbox-clock bookkeeping the notifier needs for expiry and lifecycle events."""

    resource: str
    spec: ResourceSpec
    change_types: tuple[str, ...]
    notification_url: str
    expiration: float
    application_id: str
    creator_id: str
    tenant_id: str
    created_at: float
    client_state: str | None = None
    lifecycle_url: str | None = None
    latest_tls: str = "v1_2"
    notification_query_options: str | None = None
    notification_url_app_id: str | None = None
    encryption_certificate: str | None = None
    encryption_certificate_id: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: sandbox-clock time of the next `reauthorizationRequired` (None: no lifecycle URL)
    next_reauth_at: float | None = None
    reauth_sent: int = 0

    def change_type_str(self) -> str:
        return ",".join(self.change_types)

    def to_json(self, *, include_client_state: bool) -> dict[str, Any]:
        """The Graph subscription resource.

        Why `include_client_state`: the create/renew responses echo the secret the caller just sent, while reads
        (GET, list) return it as null, as real Graph does, so the secret isn't handed out again.
        """
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type_str(),
            "clientState": self.client_state if include_client_state else None,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": self.notification_query_options,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": format_graph_datetime(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": self.latest_tls,
            "encryptionCertificate": self.encryption_certificate,
            "encryptionCertificateId": self.encryption_certificate_id,
            "notificationUrlAppId": self.notification_url_app_id,
        }

    def reset_reauth(self, now: float) -> None:
        """Schedule the next `reauthorizationRequired`: once less than max(60 min, 10% of the lifetime) remains.

        A subscription shorter than that gets it half-way through its life instead of at once, so a client that
        creates short subscriptions isn't told to reauthorize in the same breath.
        """
        if not self.lifecycle_url:
            self.next_reauth_at = None
            return
        lifetime = max(0.0, self.expiration - now)
        at = self.expiration - max(3600.0, 0.1 * lifetime)
        self.next_reauth_at = at if at > now else now + lifetime / 2


class SubscriptionStore:
    """All subscriptions of the sandbox tenant. Callers hold `state.lock`."""

    def __init__(self) -> None:
        self.items: dict[str, Subscription] = {}

    def add(self, sub: Subscription) -> None:
        self.items[sub.id] = sub

    def get(self, sub_id: str) -> Subscription | None:
        return self.items.get(sub_id.lower()) or self.items.get(sub_id)

    def remove(self, sub_id: str) -> Subscription | None:
        sub = self.get(sub_id)
        if sub is not None:
            self.items.pop(sub.id, None)
        return sub

    def for_app(self, application_id: str) -> list[Subscription]:
        return [s for s in self.items.values() if s.application_id == application_id]

    def expired(self, now: float) -> list[Subscription]:
        return [s for s in self.items.values() if s.expiration <= now]

    def matching(self, kind: str, object_id: str, change_type: str, now: float) -> list[Subscription]:
        """Live subscriptions a change concerns (expired ones get nothing even before the sweep removes them)."""
        return [
            s
            for s in self.items.values()
            if s.expiration > now and change_type in s.change_types and s.spec.matches(kind, object_id)
        ]
