"""Per-process dependencies of the tasks: settings, Redis, limiter, API clients per lane, DLQ, identity links.

Why one small context instead of globals in each module: every piece is built on first use (a worker must start
and report even while Graph or Salesforce is unreachable), rebuilt after fork (a prefork child must not share the
parent's sockets), and replaceable in tests with `override(graph=fake, salesforce=fake, ...)` without patching.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from shared.dlq import DeadLetterQueue
from shared.identity_links import IdentityLinks
from shared.redis_conn import get_redis
from shared.settings import Settings, SettingsError, get_settings


class WorkerContext:
    """Lazily built dependencies for one process. Clients are cached per lane (each lane has its own limiter share)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._settings: Settings | None = None
        self._redis: Any = None
        self._limiter: Any = None
        self._dlq: DeadLetterQueue | None = None
        self._links: IdentityLinks | None = None
        self._guard: Any = None
        self._graph: dict[str, Any] = {}
        self._salesforce: dict[str, Any] = {}
        self._graph_override: Any = None
        self._salesforce_override: Any = None
        self._mappings: Any = None
        self._catalogs: Any = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @property
    def redis(self) -> Any:
        with self._lock:
            if self._redis is None:
                if not self.settings.redis_url:
                    raise SettingsError("IDSYNC_REDIS_URL: not set (workers need the broker's Redis)")
                self._redis = get_redis(self.settings.redis_url)
            return self._redis

    @property
    def limiter(self) -> Any:
        with self._lock:
            if self._limiter is None:
                from shared.limiter import Limiter

                self._limiter = Limiter(self.redis, self.settings)
            return self._limiter

    @property
    def dlq(self) -> DeadLetterQueue:
        with self._lock:
            if self._dlq is None:
                s = self.settings
                self._dlq = DeadLetterQueue(self.redis, s.dlq_max_entries, s.dlq_max_age_days * 86400.0)
            return self._dlq

    @property
    def links(self) -> IdentityLinks:
        with self._lock:
            if self._links is None:
                self._links = IdentityLinks(self.redis)
            return self._links

    @property
    def guard(self) -> Any:
        """The mass-deprovisioning guard (`shared.deprovision_guard`), asked before every deactivation."""
        with self._lock:
            if self._guard is None:
                from shared.deprovision_guard import DeprovisionGuard

                self._guard = DeprovisionGuard(self.redis, self.settings)
            return self._guard

    def graph(self, lane: str) -> Any:
        if self._graph_override is not None:
            return self._graph_override
        with self._lock:
            if lane not in self._graph:
                from shared.graph_client import GraphClient

                self._graph[lane] = GraphClient(self.settings, limiter=self.limiter, lane=lane)
            return self._graph[lane]

    def salesforce(self, lane: str) -> Any:
        if self._salesforce_override is not None:
            return self._salesforce_override
        with self._lock:
            if lane not in self._salesforce:
                from shared.salesforce_client import SalesforceClient

                self._salesforce[lane] = SalesforceClient(self.settings, limiter=self.limiter, lane=lane)
            return self._salesforce[lane]


    @property
    def mappings(self) -> Any:
        """This process's `MappingStore` (hot reload on change or SIGHUP; the last good mapping stays)."""
        with self._lock:
            if self._mappings is None:
                from shared.provisioning.mapping_store import MappingStore, mapping_path

                self._mappings = MappingStore(mapping_path(self.settings), self.redis)
            return self._mappings

    def provisioning(self, lane: str, sender: Any) -> Any:
        """`SyncDeps` for a batch on `lane`: this process's clients, mapping store and catalogue cache."""
        from shared.provisioning.batch import SyncDeps
        from shared.provisioning.catalog_reader import CatalogCache

        with self._lock:
            if self._catalogs is None:
                self._catalogs = CatalogCache()
            catalogs = self._catalogs
        return SyncDeps(self.settings, self.redis, self.graph(lane), self.salesforce(lane), self.mappings, catalogs,
                        sender)


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def get() -> WorkerContext:
    """The context of this process; a fresh one after fork."""
    global _context
    ctx = _context
    if ctx is None or ctx.pid != os.getpid():
        with _context_lock:
            if _context is None or _context.pid != os.getpid():
                _context = WorkerContext()
            ctx = _context
    return ctx


def override(
    *,
    settings: Settings | None = None,
    redis: Any = None,
    limiter: Any = None,
    graph: Any = None,
    salesforce: Any = None,
    dlq: DeadLetterQueue | None = None,
    links: IdentityLinks | None = None,
    mappings: Any = None,
) -> WorkerContext:
    """Replace parts of this process's context (tests, and `idsync run` with pre-built clients)."""
    ctx = get()
    with ctx._lock:
        if settings is not None:
            ctx._settings = settings
        if redis is not None:
            ctx._redis = redis
        if limiter is not None:
            ctx._limiter = limiter
        if graph is not None:
            ctx._graph_override = graph
        if salesforce is not None:
            ctx._salesforce_override = salesforce
        if dlq is not None:
            ctx._dlq = dlq
        if links is not None:
            ctx._links = links
        if mappings is not None:
            ctx._mappings = mappings
        if settings is not None or redis is not None:
            ctx._guard = None  # built again from the new settings and Redis
    return ctx


def reset() -> None:
    """Forget everything; the next `get()` builds from settings again."""
    global _context
    with _context_lock:
        _context = None


os.register_at_fork(after_in_child=reset)
