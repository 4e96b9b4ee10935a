"""The audit trail: every action idsync takes (or decides not to take) on an identity, in order.

Why a Redis stream and a log line: the stream lets `idsync status`/tests read recent actions back without a log
pipeline; the log line puts the same record next to the task's own lines (same contextvars). The stream is capped
(`MAXLEN ~`) so it cannot fill Redis. A durable PostgreSQL sink comes in a later issue.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from shared.logging import get_logger

STREAM_KEY = "idsync:audit"
MAX_LEN = 100_000

log = get_logger("idsync.audit")


def audit(
    redis_client: redis.Redis,
    action: str,
    entra_id: str | None,
    sf_user_id: str | None,
    outcome: str,
    correlation_id: str | None,
    **detail: Any,
) -> str:
    """Append one record to `idsync:audit` and log it; returns the stream id."""
    fields = {
        "ts": repr(time.time()),
        "action": action,
        "entra_id": entra_id or "",
        "sf_user_id": sf_user_id or "",
        "outcome": outcome,
        "correlation_id": correlation_id or "",
        "detail": json.dumps(detail, default=str, sort_keys=True),
    }
    stream_id = redis_client.xadd(STREAM_KEY, fields, maxlen=MAX_LEN, approximate=True)
    log.info(
        "audit",
        action=action,
        entra_id=entra_id,
        sf_user_id=sf_user_id,
        outcome=outcome,
        correlation_id=correlation_id,
        **detail,
    )
    return str(stream_id)


def recent(redis_client: redis.Redis, n: int = 100) -> list[dict[str, Any]]:
    """The `n` newest records, newest first, with `detail` decoded."""
    records = []
    for stream_id, fields in redis_client.xrevrange(STREAM_KEY, count=n):
        record: dict[str, Any] = {"id": stream_id, **fields}
        record["ts"] = float(fields.get("ts", 0.0))
        record["detail"] = json.loads(fields.get("detail") or "{}")
        for key in ("entra_id", "sf_user_id", "correlation_id"):
            record[key] = fields.get(key) or None
        records.append(record)
    return records
