"""`idsync status`: what an on-call admin asks first, read from Redis alone (no Graph or Salesforce call, so it
answers even while those are down or throttling us)."""

from __future__ import annotations

import json
import time
from typing import Any

from shared.dispatch import LANES
from shared.settings import Settings


def oldest_message_age(redis: Any, queue: str, now: float | None = None) -> float | None:
    """Kombu pushes with LPUSH and workers BRPOP, so the oldest waiting message is at the right end."""
    raw = redis.lindex(queue, -1)
    if raw is None:
        return None
    try:
        published = float(json.loads(raw).get("headers", {}).get("published_at"))
    except (TypeError, ValueError, json.JSONDecodeError):
        return None
    return max(0.0, (now or time.time()) - published)


def collect(settings: Settings, redis: Any) -> dict[str, Any]:
    from producers.checkpoints import DeltaCheckpoints
    from producers.subscriptions import SubscriptionManager
    from shared import audit, parking
    from shared.audit_writer import backlog as audit_backlog
    from shared.dlq import DeadLetterQueue
    from shared.identity_links import IdentityLinks
    from shared.limiter import Limiter

    now = time.time()
    dlq = DeadLetterQueue(redis, settings.dlq_max_entries, settings.dlq_max_age_days * 86400)
    lanes = {}
    for lane in LANES:
        age = oldest_message_age(redis, lane, now)
        lanes[lane] = {
            "depth": int(redis.llen(lane)),
            "oldest_age_s": None if age is None else round(age, 3),
            "dlq": dlq.size(lane),
        }
    tenant = settings.graph_tenant_id or "default"
    checkpoints = DeltaCheckpoints(redis, tenant)
    links = IdentityLinks(redis)
    # One "revoke" record per revocation carries its outcome (revoked, frozen_blocked, no_salesforce_user...).
    revocations = [e for e in audit.recent(redis, 500) if e.get("action") == "revoke"]
    return {
        "lanes": lanes,
        "in_flight": int(redis.hlen("unacked")),
        "parked": parking.count(redis),
        "dlq_total": dlq.size(),
        "delta": {r: checkpoints.last_round(r) for r in ("users", "groups")},
        "subscriptions": SubscriptionManager(None, redis, settings).status(),  # type: ignore[arg-type]
        "api": Limiter(redis, settings).status(),
        "reviews": links.review_count(),
        "pending_ownership_transfers": len(links.pending_transfers()),
        "recent_revocations": revocations[:10],  # newest first
        "audit": audit_backlog(redis, settings.audit_sinks),
    }
