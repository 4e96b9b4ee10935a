"""Where the Graph delta poller keeps its checkpoints in Redis.

Why here and not in `producers/`: the sync lane must know whether the poller's first full enumeration of users has
finished (see `shared.provisioning.batch.prepare_groups`), and `shared/` never imports producers. One function, used
by both, keeps the key layout in one place.
"""

from __future__ import annotations

from typing import Any

from shared.settings import Settings


def tenant_of(settings: Settings) -> str:
    """The checkpoint namespace: the configured tenant, or "default" for the sandbox."""
    return settings.graph_tenant_id or "default"


def delta_key(tenant: str, resource: str, part: str) -> str:
    return f"idsync:delta:{tenant}:{resource}:{part}"


def users_enumerated(redis: Any, settings: Settings) -> bool:
    """True once the poller has saved a users deltaLink, i.e. its first full round has reached the queue."""
    return bool(redis.exists(delta_key(tenant_of(settings), "users", "link")))
