"""The dead-letter queue: bounded per lane, merges repeats of one task, claims for replay, trims tracebacks."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest
import structlog

from shared.dlq import MAX_HISTORY, Attempt, AttemptLog, DeadLetter, DeadLetterQueue, format_traceback, trim_traceback


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def _entry(entry_id: str, lane: str = "revocation", at: float | None = None, **extra: object) -> DeadLetter:
    at = time.time() if at is None else at
    fields: dict[str, Any] = {
        "id": entry_id,
        "task": f"{lane}.some_task",
        "args": [{"id": "e"}],
        "lane": lane,
        "error_class": "PermanentError",
        "error_message": "boom",
        "first_failed_at": at,
        "last_failed_at": at,
    }
    return DeadLetter(**{**fields, **extra})


def test_put_get_list_and_size_per_lane_and_overall(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=100, max_age_s=3600)
    now = time.time()
    dlq.put(_entry("a", at=now - 30))
    dlq.put(_entry("b", at=now - 10))
    dlq.put(_entry("c", lane="sync", at=now - 20))

    assert dlq.get("a") == _entry("a", at=now - 30)
    assert dlq.get("missing") is None
    assert [e.id for e in dlq.list()] == ["b", "c", "a"]  # newest failure first, across lanes
    assert [e.id for e in dlq.list(lane="revocation", limit=1)] == ["b"]
    assert (dlq.size(), dlq.size("revocation"), dlq.size("sync")) == (3, 2, 1)
    assert 29 <= (dlq.oldest_age() or 0) <= 60 and 19 <= (dlq.oldest_age("sync") or 0) <= 50
    assert DeadLetterQueue(fakeredis.FakeRedis(decode_responses=True), 1, 1).oldest_age() is None


def test_the_same_task_dead_lettered_again_updates_attempts_and_keeps_first_failed_at(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=100, max_age_s=3600)
    dlq.put(_entry("a", at=1000.0 + time.time() - 2000, attempts=3))
    first = dlq.get("a")
    dlq.put(_entry("a", attempts=1, error_message="boom again"))

    again = dlq.get("a")
    assert first is not None and again is not None
    assert again.first_failed_at == first.first_failed_at
    assert again.last_failed_at > first.last_failed_at
    assert again.attempts == 4 and again.error_message == "boom again"
    assert dlq.size() == 1


def test_the_lane_is_trimmed_by_size_and_age_on_insert(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=3, max_age_s=600)
    now = time.time()
    dlq.put(_entry("ancient", at=now - 700))
    for i in range(4):
        dlq.put(_entry(f"n{i}", at=now - 100 + i))
    dlq.put(_entry("other-lane", lane="sync", at=now - 700))

    assert [e.id for e in dlq.list(lane="revocation")] == ["n3", "n2", "n1"]
    assert dlq.get("ancient") is None and dlq.get("n0") is None  # entries gone, not only their index
    assert dlq.size("sync") == 1  # trimming one lane never touches another


def test_entries_dropped_by_the_cap_are_logged_and_counted_per_lane(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=2, max_age_s=600)
    now = time.time()
    assert dlq.dropped("revocation") == (0, None)
    with structlog.testing.capture_logs() as logs:
        dlq.put(_entry("ancient", at=now - 700))
        dlq.put(_entry("n0", at=now - 50))  # drops "ancient" (age)
        dlq.put(_entry("s0", lane="sync", at=now - 10))
        dlq.put(_entry("n1", at=now - 20))
        dlq.put(_entry("n2", at=now - 10))  # drops "n0" (size)

    count, last_at = dlq.dropped("revocation")
    assert count == 2 and last_at is not None and last_at >= now - 1
    assert dlq.dropped("sync") == (0, None)
    warnings = [e for e in logs if e["event"] == "dlq_entries_dropped"]
    assert [(w["lane"], w["count"], w["entry_ids"]) for w in warnings] == [
        ("revocation", 1, ["ancient"]),
        ("revocation", 1, ["n0"]),
    ]
    assert (warnings[0]["too_old"], warnings[1]["over_size"]) == (1, 1)
    assert all(w["log_level"] == "warning" for w in warnings)


def test_a_repeat_dead_letter_appends_to_the_capped_history(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=100, max_age_s=3600)
    dlq.put(_entry("a", history=[Attempt(time=float(i), error_class="E", message=str(i)) for i in range(8)]))
    dlq.put(_entry("a", history=[Attempt(time=float(i), error_class="F", message=str(i)) for i in range(8, 12)]))
    entry = dlq.get("a")
    assert entry is not None
    history = entry.history
    assert len(history) == MAX_HISTORY and [a.message for a in history] == [str(i) for i in range(2, 12)]


def test_the_attempt_log_hands_over_the_last_attempts_once(r) -> None:
    attempts = AttemptLog(r, ttl_s=60)
    for i in range(MAX_HISTORY + 3):
        attempts.record("t1", Attempt.now("RetryableError", f"try {i}"))
    taken = attempts.take("t1")
    assert [a.message for a in taken] == [f"try {i}" for i in range(3, MAX_HISTORY + 3)]
    assert attempts.take("t1") == [] and not r.exists("idsync:attempts:t1")
    attempts.record("t2", Attempt.now("RetryableError", "x"))
    assert 0 < r.ttl("idsync:attempts:t2") <= 60
    assert len(Attempt.now("E", "x" * 2000).message) == 500


def test_only_one_claim_wins_until_released(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=10, max_age_s=60)
    assert dlq.claim("a") is True
    assert dlq.claim("a") is False
    dlq.release("a")
    assert dlq.claim("a", ttl_s=5) is True


def test_remove_reports_true_once_and_purge_drops_old_entries(r) -> None:
    dlq = DeadLetterQueue(r, max_entries=100, max_age_s=10 * 86400)
    now = time.time()
    dlq.put(_entry("old", at=now - 3 * 86400))
    dlq.put(_entry("old-sync", lane="sync", at=now - 3 * 86400))
    dlq.put(_entry("new", at=now))

    assert dlq.remove("new") is True and dlq.remove("new") is False
    assert dlq.purge(older_than_s=86400, lane="sync") == 1
    assert dlq.purge(older_than_s=86400) == 1
    assert dlq.size() == 0 and r.hlen("idsync:dlq:entries") == 0


def test_tracebacks_keep_the_innermost_frames_and_stay_under_the_byte_cap() -> None:
    frames = "".join(f'  File "mod{i}.py", line {i}, in f{i}\n    call{i}()\n' for i in range(40))
    text = trim_traceback("Traceback (most recent call last):\n" + frames + "RuntimeError: deep failure")
    assert text.count('  File "') == 20 and "20 frames omitted" in text
    assert "mod39.py" in text and "mod19.py" not in text
    assert text.startswith("Traceback") and text.endswith("RuntimeError: deep failure")
    try:
        raise RuntimeError("real failure")
    except RuntimeError as exc:
        assert format_traceback(exc).endswith("RuntimeError: real failure")
    huge = "Traceback (most recent call last):\n" + "x" * 20_000 + "\nValueError: tail"
    trimmed = trim_traceback(huge)
    assert len(trimmed.encode()) <= 8 * 1024 + 32 and trimmed.endswith("ValueError: tail")
