"""The single audit writer against a real redis-server: it chains the inbox, signs checkpoints, delivers to every
sink, keeps what a sink lacks until it has it, and never lets a second writer fork the chain."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from shared.audit import STREAM_KEY, recent
from shared.audit_chain import parse_lines, verify
from shared.audit_sinks.jsonl import JsonlSink, read_lines
from shared.audit_writer import CHAIN_KEY, AuditWriter, LostLock, backlog, head, sink_key
from tests.shared.audit_helpers import KEY, MemorySink, drain, emit, wait_until


def test_events_are_chained_signed_delivered_and_verifiable(redis_client: Any, tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "audit", 1_000_000)
    writer = AuditWriter(redis_client, {"jsonl": sink}, KEY, batch_size=7, checkpoint_every=10)
    assert writer.acquire()
    emit(redis_client, 25)
    drain(writer)
    verdict = verify(parse_lines(read_lines(tmp_path / "audit")), [KEY])
    assert verdict.intact, verdict.problems
    assert verdict.checkpoints == 2 and verdict.last_seq == 27
    events = [e["event"] for e in map(__import__("json").loads, read_lines(tmp_path / "audit")) if e["type"] == "event"]
    assert [e["entra_id"] for e in events] == [f"entra-{i}" for i in range(25)]
    assert all(e["latency_ms"] >= 50 and e["upn"].endswith("@example.com") for e in events)


def test_delivered_entries_leave_redis_but_recent_events_stay_for_status(redis_client: Any, tmp_path: Path) -> None:
    writer = AuditWriter(redis_client, {"jsonl": JsonlSink(tmp_path / "a", 10**6)}, KEY, recent_keep=5)
    assert writer.acquire()
    emit(redis_client, 12)
    drain(writer)
    writer.trim()
    assert redis_client.xlen(CHAIN_KEY) == 0
    assert redis_client.xlen(STREAM_KEY) == 5
    assert [r["entra_id"] for r in recent(redis_client, 2)] == ["entra-11", "entra-10"]


def test_the_inbox_is_never_trimmed_past_what_was_chained(redis_client: Any, tmp_path: Path) -> None:
    writer = AuditWriter(redis_client, {"jsonl": JsonlSink(tmp_path / "a", 10**6)}, KEY, recent_keep=0,
                         batch_size=4)
    assert writer.acquire()
    emit(redis_client, 10)
    writer.step()  # chains 4 of 10
    writer.trim()
    assert redis_client.xlen(STREAM_KEY) == 6


def test_a_sink_that_is_down_delays_only_itself_and_loses_nothing(redis_client: Any) -> None:
    good, bad = MemorySink("good"), MemorySink("bad")
    bad.down = True
    writer = AuditWriter(redis_client, {"good": good, "bad": bad}, KEY, batch_size=50, backoff_max_s=0.2)
    stop = threading.Event()
    runner = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    runner.start()
    try:
        emit(redis_client, 120)
        wait_until(lambda: len([e for e in good.entries if e["type"] == "event"]) == 120, what="the good sink")
        assert bad.entries == [] and bad.attempts >= 1
        held = redis_client.xlen(CHAIN_KEY)
        assert held >= 120  # kept in Redis for the sink that lacks them
        status = backlog(redis_client, ["good", "bad"])
        assert status["sinks"]["bad"]["backlog"] == status["head_seq"] and status["sinks"]["good"]["backlog"] == 0
        bad.down = False
        wait_until(lambda: len(bad.entries) >= status["head_seq"], what="the recovered sink")
    finally:
        stop.set()
        runner.join(timeout=20)
    assert [e["seq"] for e in bad.entries] == list(range(1, len(bad.entries) + 1))  # in order, once each
    assert [e["hash"] for e in bad.entries] == [e["hash"] for e in good.entries[: len(bad.entries)]]
    assert redis_client.xlen(CHAIN_KEY) == 0


def test_a_second_writer_waits_and_a_deposed_writer_cannot_append(redis_client: Any) -> None:
    first = AuditWriter(redis_client, {}, KEY)
    second = AuditWriter(redis_client, {}, KEY)
    assert first.acquire() and not second.acquire()
    emit(redis_client, 3)
    with pytest.raises(LostLock):
        second.step()
    assert first.step() >= 3
    redis_client.delete("idsync:audit:writer:lock")  # the first writer's lock expired while it was paused
    assert second.acquire()
    emit(redis_client, 2, start=3)
    with pytest.raises(LostLock):
        first.step()
    second.step()
    assert head(redis_client)["seq"] >= 5


def test_a_crash_between_writing_and_moving_the_cursor_repeats_nothing_in_the_file(
    redis_client: Any, tmp_path: Path
) -> None:
    writer = AuditWriter(redis_client, {"jsonl": JsonlSink(tmp_path / "a", 10**6)}, KEY)
    assert writer.acquire()
    emit(redis_client, 5)
    drain(writer)
    redis_client.set(sink_key("jsonl"), 2)  # as if the cursor update was lost
    writer.sinks["jsonl"] = JsonlSink(tmp_path / "a", 10**6)  # a restarted writer
    writer.deliver_once("jsonl")
    assert verify(parse_lines(read_lines(tmp_path / "a")), [KEY]).intact


def test_the_jsonl_sink_rotates_by_size_and_verify_reads_across_files(redis_client: Any, tmp_path: Path) -> None:
    writer = AuditWriter(redis_client, {"jsonl": JsonlSink(tmp_path / "a", 2_000)}, KEY, batch_size=3)
    assert writer.acquire()
    emit(redis_client, 20)
    drain(writer)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) > 2 and files[0] == "audit-000000000001.jsonl"
    assert verify(parse_lines(read_lines(tmp_path / "a")), [KEY]).intact
    (tmp_path / "a" / files[1]).unlink()
    assert {p.kind for p in verify(parse_lines(read_lines(tmp_path / "a")), [KEY]).problems} == {"deleted"}
