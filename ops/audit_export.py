"""`idsync audit export`: a time slice of the trail as JSON lines (chain entries, verifiable) or CSV (flat events).

Why JSONL keeps whole chain entries: an auditor who receives a slice can still re-hash each entry and check the
links inside the slice; CSV is for spreadsheets and loses nothing but that.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

from shared.audit_events import canonical_json

CSV_COLUMNS = ["seq", "time_utc", "action", "outcome", "actor", "entra_id", "sf_user_id", "upn", "rule",
               "source_event", "correlation_id", "observed_at_utc", "latency_ms", "before", "after", "detail",
               "event_id", "hash", "prev_hash"]


def utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_time(entry: dict[str, Any]) -> float:
    """An event's own time; a checkpoint's signing time."""
    if entry.get("type") == "checkpoint":
        return float((entry.get("checkpoint") or {}).get("signed_at") or entry.get("chained_at") or 0.0)
    return float((entry.get("event") or {}).get("time") or entry.get("chained_at") or 0.0)


def in_range(entries: Iterable[dict[str, Any]], since: float | None, until: float | None) -> list[dict[str, Any]]:
    return [e for e in entries
            if (since is None or entry_time(e) >= since) and (until is None or entry_time(e) < until)]


def flat(entry: dict[str, Any]) -> dict[str, Any]:
    event = entry.get("event") or {}

    def js(value: Any) -> str:
        return "" if value in (None, {}) else json.dumps(value, sort_keys=True, default=str)

    return {
        "seq": entry.get("seq"),
        "time_utc": utc(event.get("time")),
        "action": event.get("action", ""),
        "outcome": event.get("outcome", ""),
        "actor": event.get("actor", ""),
        "entra_id": event.get("entra_id") or "",
        "sf_user_id": event.get("sf_user_id") or "",
        "upn": event.get("upn") or "",
        "rule": event.get("rule") or "",
        "source_event": event.get("source_event") or "",
        "correlation_id": event.get("correlation_id") or "",
        "observed_at_utc": utc(event.get("observed_at")),
        "latency_ms": "" if event.get("latency_ms") is None else event["latency_ms"],
        "before": js(event.get("before")),
        "after": js(event.get("after")),
        "detail": js(event.get("detail")),
        "event_id": event.get("id", ""),
        "hash": entry.get("hash", ""),
        "prev_hash": entry.get("prev_hash", ""),
    }


def write_jsonl(entries: Iterable[dict[str, Any]], out: IO[str]) -> int:
    n = 0
    for entry in entries:
        out.write(canonical_json(entry) + "\n")
        n += 1
    return n


def write_csv(entries: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Events only (checkpoints are chain bookkeeping, not actions)."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    n = 0
    for entry in entries:
        if entry.get("type") != "event":
            continue
        writer.writerow(flat(entry))
        n += 1
    return n
