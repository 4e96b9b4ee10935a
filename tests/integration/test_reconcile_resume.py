"""The scheduled `sync.reconcile` task on a real sync worker, killed mid-run (SIGKILL to the whole worker), and
resumed by the next `idsync reconcile`: the same run finishes, counted once, and nothing is written twice (the audit
trail, where every write of the run carries its run id, says so)."""

from __future__ import annotations

import json

import pytest

from shared import audit
from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.reconcile.run_state import RedisRunLog
from tests.integration.test_reconcile import idsync

pytestmark = pytest.mark.integration


def test_a_worker_killed_mid_run_is_resumed_by_the_next_run_without_writing_twice(stack, wait_for) -> None:
    stack.env["IDSYNC_RECONCILE_CHUNK_SIZE"] = "4"  # many chunks, so the kill lands mid-run
    expected = idsync(stack, "reconcile", "--dry-run", "--quiet", "--report", "expected.json")
    assert expected.returncode == 0, expected.stderr[-2000:]
    counts = json.loads((stack.tmp / "expected.json").read_text())["counts"]
    assert counts["create"] + counts["update"] > 20
    stack.sandbox.state.faults.patch({"salesforce": {"latency_ms": 120}})  # each write takes a moment
    try:
        stack.start_worker("sync")
        publish(stack.celery(), IdentityEvent(kind=EventKind.RECONCILE, source=EventSource.OPERATOR,
                                              tenant="test", object_id="reconcile"))

        def two_chunks_done() -> RedisRunLog | None:
            run = RedisRunLog.unfinished(stack.redis)
            return run if run is not None and int(run.meta().get("chunks_done", 0)) >= 2 else None

        run = wait_for(two_chunks_done, timeout=120, interval=0.05, what="two chunks applied by the worker")
        stack.kill("worker-sync")  # SIGKILL to the whole worker: no cleanup, lock left behind
        cut = RedisRunLog.unfinished(stack.redis)
        assert cut is not None and cut.run_id == run.run_id
        chunks_at_kill = int(cut.meta()["chunks_done"])
        total_chunks = -(-sum(counts.values()) // 4)
        assert chunks_at_kill < total_chunks
    finally:
        stack.sandbox.state.faults.patch({"salesforce": {"latency_ms": 0}})

    resumed = idsync(stack, "reconcile", "--quiet", "--report", "resumed.json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((stack.tmp / "resumed.json").read_text())
    assert report["run_id"] == run.run_id  # the same run, finished; not a new one from zero
    assert {k: report["counts"][k] for k in ("create", "update", "deprovision")} == {
        k: counts[k] for k in ("create", "update", "deprovision")}
    writes = [(r["entra_id"], r["detail"].get("change"), r["detail"].get("target"))
              for r in audit.recent(stack.redis, 100_000)
              if r["correlation_id"] == run.run_id and r["action"] in ("provision", "field_update", "entitlement_add",
                                                                       "entitlement_remove")]
    assert writes and len(writes) == len(set(writes))  # nothing written twice
    after = idsync(stack, "reconcile", "--dry-run", "--quiet", "--report", "after.json")
    assert after.returncode == 0
    final = json.loads((stack.tmp / "after.json").read_text())["counts"]
    assert final["create"] == 0 and final["update"] == 0


