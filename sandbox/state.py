"""Everything one running sandbox holds, passed to every route builder.

The Graph side (`sandbox.graph`) and the Salesforce side (`sandbox.salesforce`) each own their store; this object
ties them to the shared clock, tunables, credentials and the activity log the admin page shows.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.clock import Clock
from sandbox.config import DEFAULT_CONFIG, DEFAULT_FAULTS, Tunables


def _secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Credentials:
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    graph_client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    graph_client_secret: str = field(default_factory=_secret)
    sf_client_id: str = field(default_factory=lambda: "3MVG9" + secrets.token_hex(20))
    sf_client_secret: str = field(default_factory=_secret)
    admin_token: str = field(default_factory=_secret)
    #: app roles granted to the Graph app (enforced by Graph routes)
    graph_roles: list[str] = field(
        default_factory=lambda: [
            "User.ReadWrite.All",
            "Group.ReadWrite.All",
            "Directory.ReadWrite.All",
            "User.Invite.All",
        ]
    )


class ActivityLog:
    """Bounded, thread-safe record of what happened (webhook deliveries, API calls) for the admin page."""

    def __init__(self, maxlen: int = 500) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._items.append({"kind": kind, "at": time.time(), **data})
            self.counters[kind] += 1

    def count(self, kind: str, n: int = 1) -> None:
        """A counter only (no item): writes are counted one by one, and 100,000 of them must stay cheap."""
        with self._lock:
            self.counters[kind] += n

    def recent(self, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            items = [i for i in self._items if kind is None or i["kind"] == kind]
        return items[-limit:]


@dataclass
class SandboxState:
    state_dir: Path
    clock: Clock = field(default_factory=Clock)
    config: Tunables = field(default_factory=lambda: Tunables(DEFAULT_CONFIG))
    faults: Tunables = field(default_factory=lambda: Tunables(DEFAULT_FAULTS))
    creds: Credentials = field(default_factory=Credentials)
    activity: ActivityLog = field(default_factory=ActivityLog)
    #: https://host:port of the running server; set once it listens
    base_url: str = ""
    ca_path: Path | None = None
    #: extra CA bundle the notifier trusts for https notification URLs (besides the system store)
    notification_ca_path: Path | None = None
    #: filled by sandbox.graph / sandbox.salesforce when the app is built
    directory: Any = None  # sandbox.graph.store.Directory
    notifier: Any = None  # sandbox.graph.subscriptions.Notifier
    org: Any = None  # sandbox.salesforce.org.Org
    #: one lock for the whole sandbox; routes hold it while reading/mutating stores
    lock: threading.RLock = field(default_factory=threading.RLock)
