"""The audit trail's front door: every action idsync takes (or decides not to take) on an identity, in order.

Why a Redis stream here and nothing more: this runs on the hot path of a revocation, so it does one XADD (no
trimming, no hashing, no network call to a sink) and returns. The stream `idsync:audit` is the inbox of the single
writer (`shared.audit_writer`, run by `idsync audit-writer`), which chains the entries (`shared.audit_chain`) and
delivers them to the configured sinks; only the writer trims the inbox, and only entries it has chained. A sink
outage therefore delays delivery but never drops an event and never blocks a worker.

Each inbox entry carries the full event (`event`, canonical JSON of `shared.audit_events.AuditEvent`) plus a few
flat fields (ts, action, ids, outcome, detail) that `idsync status` and older readers use. The same record is also
logged next to the task's own lines (same contextvars).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from shared.audit_events import ACTOR_IDSYNC, AuditEvent
from shared.logging import get_logger

STREAM_KEY = "idsync:audit"
#: Kept for compatibility: the inbox keeps about this many chained entries for `recent()` (IDSYNC_AUDIT_RECENT_KEEP).
MAX_LEN = 100_000

log = get_logger("idsync.audit")


def audit(
    redis_client: redis.Redis,
    action: str,
    entra_id: str | None,
    sf_user_id: str | None,
    outcome: str,
    correlation_id: str | None,
    *,
    upn: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    rule: str | None = None,
    source_event: str | None = None,
    actor: str = ACTOR_IDSYNC,
    observed_at: float | None = None,
    **detail: Any,
) -> str:
    """Append one event to the audit inbox and log it; returns the stream id.

    `observed_at` (epoch seconds: when a producer first saw the Entra change) gives the event its latency.
    """
    event = AuditEvent.build(
        action,
        outcome,
        observed_at=observed_at,
        actor=actor,
        entra_id=entra_id or None,
        sf_user_id=sf_user_id or None,
        upn=upn,
        before=before,
        after=after,
        rule=rule,
        source_event=source_event,
        correlation_id=correlation_id or None,
        detail=json.loads(json.dumps(detail, default=str)),
    )
    return append(redis_client, event)


def append(redis_client: redis.Redis, event: AuditEvent) -> str:
    """XADD one built event to the inbox (never trimmed here) and log it."""
    legacy_detail = dict(event.detail)
    if event.observed_at is not None:
        legacy_detail["observed_at"] = event.observed_at
    if event.upn:
        legacy_detail["upn"] = event.upn  # `idsync status` shows it for recent revocations
    fields: dict[FieldT, EncodableT] = {
        "ts": repr(event.time),
        "action": event.action,
        "entra_id": event.entra_id or "",
        "sf_user_id": event.sf_user_id or "",
        "outcome": event.outcome,
        "correlation_id": event.correlation_id or "",
        "detail": json.dumps(legacy_detail, default=str, sort_keys=True),
        "event": event.to_json(),
    }
    stream_id = redis_client.xadd(STREAM_KEY, fields)
    log.info(
        "audit",
        action=event.action,
        entra_id=event.entra_id,
        sf_user_id=event.sf_user_id,
        outcome=event.outcome,
        correlation_id=event.correlation_id,
        **({"latency_ms": event.latency_ms} if event.latency_ms is not None else {}),
        **event.detail,
    )
    _observe(event)
    return str(stream_id)


def append_many(redis_client: redis.Redis, events: list[AuditEvent]) -> int:
    """XADD many built events in one round trip (a batch of provisioning changes), logging one summary line.

    Why not `append` in a loop: 200 users x a handful of changes each would cost a thousand round trips and a
    thousand log lines per batch; the trail gets every event all the same, and each is in the trail, not the log.
    """
    if not events:
        return 0
    pipe = redis_client.pipeline(transaction=False)
    counts: dict[str, int] = {}
    for event in events:
        pipe.xadd(STREAM_KEY, {
            "ts": repr(event.time),
            "action": event.action,
            "entra_id": event.entra_id or "",
            "sf_user_id": event.sf_user_id or "",
            "outcome": event.outcome,
            "correlation_id": event.correlation_id or "",
            "detail": json.dumps(dict(event.detail), default=str, sort_keys=True),
            "event": event.to_json(),
        })
        counts[f"{event.action}:{event.outcome}"] = counts.get(f"{event.action}:{event.outcome}", 0) + 1
    pipe.execute()
    log.info("audit_batch", events=len(events), by_action=counts)
    return len(events)


def _observe(event: AuditEvent) -> None:
    """The revocation latency histogram is fed here: the one place where that figure is computed."""
    if event.action == "revoke" and event.latency_ms is not None:
        from shared import metrics

        metrics.observe_revocation(event.outcome, event.latency_ms / 1000.0)


def event_from_fields(fields: dict[str, str], fallback_id: str = "") -> dict[str, Any]:
    """The event of one inbox entry, also for entries written by versions that had no `event` field."""
    if fields.get("event"):
        return dict(json.loads(fields["event"]))
    detail = json.loads(fields.get("detail") or "{}")
    observed = detail.pop("observed_at", None)
    ts = float(fields.get("ts") or time.time())
    event = AuditEvent(
        id=fallback_id.replace("-", "") or AuditEvent.model_fields["id"].get_default(call_default_factory=True),
        time=ts,
        action=fields.get("action") or "unknown",
        outcome=fields.get("outcome") or "",
        entra_id=fields.get("entra_id") or None,
        sf_user_id=fields.get("sf_user_id") or None,
        correlation_id=fields.get("correlation_id") or None,
        observed_at=float(observed) if observed is not None else None,
        latency_ms=round((ts - float(observed)) * 1000, 3) if observed is not None else None,
        detail=detail,
    )
    return event.to_dict()


def recent(redis_client: redis.Redis, n: int = 100) -> list[dict[str, Any]]:
    """The `n` newest records, newest first, with `detail` decoded."""
    records = []
    for stream_id, raw_fields in redis_client.xrevrange(STREAM_KEY, count=n) or []:
        fields = {str(key): str(value) for key, value in (raw_fields or {}).items()}
        record: dict[str, Any] = {"id": str(stream_id), **fields}
        event = json.loads(record.pop("event", None) or "{}")
        record["ts"] = float(fields.get("ts", 0.0))
        record["detail"] = json.loads(fields.get("detail") or "{}")
        record["upn"] = event.get("upn") or record["detail"].get("upn")
        for key in ("entra_id", "sf_user_id", "correlation_id"):
            record[key] = fields.get(key) or None
        records.append(record)
    return records
