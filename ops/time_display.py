"""How the CLI shows points in time: ISO 8601 in UTC for machines and for pasting into tickets, plus "3 min ago" for
people reading a terminal. Redis holds epoch floats (cheap to compare and sort); nothing prints them raw.

One convention makes `--json` output consistent without each command listing its time fields: a numeric value under
a key named `ts`, `time` or ending in `_at` is a point in time (`with_iso_times`). Durations are named `*_s`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


def iso(ts: float | None, timespec: str = "milliseconds") -> str | None:
    """`2025-03-01T09:30:00.123Z`; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(float(ts), UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def ago(ts: float | None, now: float | None = None) -> str:
    """`just now`, `42 s ago`, `3 min ago`, `5 h 12 min ago`, `2 d 3 h ago` (or `in 3 h 59 min` for a future time).

    Hours and days carry the next unit too (when not zero): "in 3 h" for a time 3 h 59 min away misled by an hour.
    Below an hour, whole minutes; below a minute, seconds. Always rounded down."""
    if ts is None:
        return "never"
    delta = (time.time() if now is None else now) - float(ts)
    future, seconds = delta < 0, abs(delta)
    if seconds < 1:
        return "just now"
    amount = duration(seconds)
    return f"in {amount}" if future else f"{amount} ago"


def duration(seconds: float) -> str:
    """`42 s`, `3 min`, `3 h 59 min`, `2 d 3 h`: the largest unit, and the next one for hours and days."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3_600:
        return f"{whole // 60} min"
    units = (("d", 86_400, "h", 3_600), ("h", 3_600, "min", 60))
    unit, size, sub_unit, sub_size = units[0] if whole >= 86_400 else units[1]
    major, rest = divmod(whole, size)
    minor = rest // sub_size
    return f"{major} {unit}" + (f" {minor} {sub_unit}" if minor else "")


def when(ts: float | None, now: float | None = None) -> str:
    """`2025-03-01T09:30:00Z (3 min ago)`, for tables and one-line summaries."""
    if ts is None:
        return "never"
    return f"{iso(ts, timespec='seconds')} ({ago(ts, now)})"


def _is_time_key(key: str) -> bool:
    return key in ("ts", "time") or key.endswith("_at")


def with_iso_times(data: Any) -> Any:
    """A copy of `data` (dicts, lists, scalars) with every point in time as an ISO 8601 string."""
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            out[key] = iso(value) if numeric and isinstance(key, str) and _is_time_key(key) else with_iso_times(value)
        return out
    if isinstance(data, list | tuple):
        return [with_iso_times(item) for item in data]
    return data
