"""Times for people (ISO 8601 plus "3 min ago") and for machines (ISO 8601 wherever a point in time appears)."""

from __future__ import annotations

from ops.time_display import ago, iso, when, with_iso_times

T = 1_740_821_400.25  # 2025-03-01T09:30:00.250Z


def test_iso_is_utc_with_a_z_and_none_stays_none() -> None:
    assert iso(T) == "2025-03-01T09:30:00.250Z"
    assert iso(T, timespec="seconds") == "2025-03-01T09:30:00Z"
    assert iso(None) is None


def test_relative_times_read_like_a_person_would_say_them() -> None:
    assert ago(T, now=T + 0.2) == "just now"
    assert ago(T, now=T + 42) == "42 s ago"
    assert ago(T, now=T + 3 * 60 + 5) == "3 min ago"
    assert ago(T, now=T + 5 * 3600) == "5 h ago"
    assert ago(T, now=T + 2 * 86400 + 7) == "2 d ago"
    assert ago(T + 180, now=T) == "in 3 min"
    assert ago(T + 3 * 3600 + 59 * 60 + 30, now=T) == "in 3 h 59 min"  # not "in 3 h": an hour off
    assert ago(T, now=T + 5 * 3600 + 12 * 60) == "5 h 12 min ago"
    assert ago(T, now=T + 2 * 86400 + 3 * 3600 + 59 * 60) == "2 d 3 h ago"
    assert ago(None) == "never"
    assert when(T, now=T + 180) == "2025-03-01T09:30:00Z (3 min ago)"


def test_every_point_in_time_in_nested_output_becomes_iso_and_nothing_else_changes() -> None:
    data = {
        "ts": T,
        "lanes": {"sync": {"oldest_age_s": 5.5, "depth": 3, "dlq_last_dropped_at": None}},
        "delta": {"users": {"time": T, "events": 2}},
        "entries": [{"first_failed_at": T, "history": [{"time": T, "error_class": "E"}], "flag_at": True}],
        "headers": {"published_at": "1740821400.250"},
    }
    out = with_iso_times(data)
    assert out["ts"] == out["delta"]["users"]["time"] == "2025-03-01T09:30:00.250Z"
    assert out["entries"][0]["first_failed_at"] == out["entries"][0]["history"][0]["time"] == iso(T)
    assert out["lanes"]["sync"] == {"oldest_age_s": 5.5, "depth": 3, "dlq_last_dropped_at": None}
    assert out["entries"][0]["flag_at"] is True and out["headers"] == {"published_at": "1740821400.250"}
    assert data["ts"] == T  # the input is not changed
