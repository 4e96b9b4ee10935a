"""`idsync status`: what an on-call admin asks first, read from Redis alone (no Graph or Salesforce call, so it
answers even while those are down or throttling us).

Per lane, where every message is: waiting in the queue, running, retrying (a Celery countdown retry held by a worker
until its ETA), parked (a long wait in `idsync:parked`), dead-lettered, and dropped by the DLQ cap. Without the middle
three a leaver being retried through a Salesforce outage looked like "waiting 0": nothing to worry about.
Times are epoch seconds here; the CLI renders them (ISO 8601 in `--json`, see `ops/time_display.py`).
"""

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


def unacked_by_lane(redis: Any) -> dict[str, dict[str, int]]:
    """Messages workers hold unacknowledged, per lane: `running` (executing now) and `retrying` (a countdown retry
    waiting for its ETA in a worker's memory).

    kombu's Redis transport keeps each one in the hash `unacked` as JSON `[message, exchange, routing_key]`; our
    routing key is the lane, and Celery's message headers carry `eta` only for delayed messages.
    """
    counts = {lane: {"running": 0, "retrying": 0} for lane in LANES}
    for raw in redis.hvals("unacked"):
        try:
            message, _exchange, routing_key = json.loads(raw)
            eta = (message.get("headers") or {}).get("eta")
        except (TypeError, ValueError, AttributeError):
            continue
        if routing_key in counts:
            counts[routing_key]["retrying" if eta else "running"] += 1
    return counts


def _upn_of(record: dict[str, Any], links: Any) -> str | None:
    """Revocations audited before the UPN was recorded: the identity link still knows it."""
    upn = record.get("upn") or (record.get("detail") or {}).get("upn")
    if upn or not record.get("entra_id"):
        return upn
    link = links.get_link(record["entra_id"])
    return link.upn if link else None


def collect(settings: Settings, redis: Any) -> dict[str, Any]:
    from producers.checkpoints import DeltaCheckpoints
    from producers.subscriptions import subscription_status
    from shared import audit, parking
    from shared.audit_writer import backlog as audit_backlog
    from shared.dlq import DeadLetterQueue
    from shared.identity_links import IdentityLinks
    from shared.limiter import Limiter

    now = time.time()
    dlq = DeadLetterQueue(redis, settings.dlq_max_entries, settings.dlq_max_age_days * 86400)
    unacked = unacked_by_lane(redis)
    parked = parking.count_by_lane(redis)
    lanes = {}
    for lane in LANES:
        age = oldest_message_age(redis, lane, now)
        dropped, dropped_at = dlq.dropped(lane)
        lanes[lane] = {
            "depth": int(redis.llen(lane)),
            "oldest_age_s": None if age is None else round(age, 3),
            "running": unacked[lane]["running"],
            "retrying": unacked[lane]["retrying"],
            "parked": parked[lane],
            "dlq": dlq.size(lane),
            "dlq_dropped": dropped,
            "dlq_last_dropped_at": dropped_at,
        }
    tenant = settings.graph_tenant_id or "default"
    checkpoints = DeltaCheckpoints(redis, tenant)
    links = IdentityLinks(redis)
    # One "revoke" record per revocation carries its outcome (revoked, frozen_blocked, no_salesforce_user...).
    revocations = [e for e in audit.recent(redis, 500) if e.get("action") == "revoke"][:10]
    for record in revocations:
        record["upn"] = _upn_of(record, links)
    return {
        "lanes": lanes,
        "in_flight": int(redis.hlen("unacked")),
        "parked": parking.count(redis),
        "dlq_total": dlq.size(),
        "delta": {r: checkpoints.last_round(r) for r in ("users", "groups")},
        # Success time, failures in a row and the last error (class, message, time), so a poller that fails every
        # round is visible here and not hidden behind the previous run's last round.
        "delta_outcome": {r: checkpoints.outcome(r) for r in ("users", "groups")},
        "subscriptions": subscription_status(redis, settings),
        "api": Limiter(redis, settings).status(),
        "reviews": links.review_count(),
        "pending_ownership_transfers": len(links.pending_transfers()),
        "recent_revocations": revocations,  # newest first
        "audit": audit_backlog(redis, settings.audit_sinks),
        "provisioning": _provisioning(redis),
        "guard": _guard(settings, redis),
        "reconcile": _reconcile(redis),
    }


def _reconcile(redis: Any) -> dict[str, Any]:
    """The run in progress (or cut short), the latest runs with their counts, and when beat starts the next."""
    from shared.reconcile.run_state import CURRENT_KEY, recent_runs, run_in_progress
    from workers.reconcile import NEXT_AT_KEY

    next_at = redis.get(NEXT_AT_KEY)
    return {
        "current": redis.get(CURRENT_KEY),
        "running": run_in_progress(redis),
        "next_at": float(next_at) if next_at else None,
        "recent": recent_runs(redis, 3),
    }


def _guard(settings: Settings, redis: Any) -> dict[str, Any]:
    """Deactivations the mass-deprovisioning guard holds: each run waits for `idsync approve` or `idsync reject`."""
    from shared.deprovision_guard import DeprovisionGuard

    guard = DeprovisionGuard(redis, settings)
    return {"held_runs": [vars(run) for run in guard.held_runs()], "held_users": guard.held_users()}


def _provisioning(redis: Any) -> dict[str, Any]:
    """Joiners and movers: the mapping in use (and its last refused edit), the sync backlog, licence shortages."""
    from shared.dirty_users import DirtyUsers
    from shared.provisioning.batch import LICENCE_BLOCKED_KEY
    from shared.provisioning.mapping_store import mapping_status

    backlog = DirtyUsers(redis)
    age = backlog.oldest_age()
    return {
        "mapping": mapping_status(redis),
        "backlog": backlog.pending(),
        "backlog_in_flight": backlog.in_flight(),
        "backlog_oldest_age_s": None if age is None else round(age, 3),
        "waiting_for_licence": int(redis.zcard(LICENCE_BLOCKED_KEY)),
    }
