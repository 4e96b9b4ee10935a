"""Reconciliation as an operator runs it: `idsync reconcile` on the sandbox `make run` starts (the seeded drift is
shown by a dry run, then repaired until every linked user's mapped fields equal Entra's), and the scheduled
`sync.reconcile` task on a real sync worker that is killed mid-run and resumed by the next `idsync reconcile`
without writing anything twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.admin_clients import GraphAdmin
from sandbox.server import SandboxServer
from shared import audit
from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.identity_links import LINKS_BY_SF_KEY
from shared.reconcile.run_state import RedisRunLog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """What `make run` starts: `python -m sandbox --groups 13` with its defaults (50 users, seed 1, overlap 0.3)."""
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=50, groups=13, seed=1, overlap=0.3)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _idsync(stack: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=stack.tmp, env={**_env(stack), **env},
                          capture_output=True, text=True, timeout=600)


def _env(stack: Any) -> dict[str, str]:
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}, **stack.env}


def _mapped_values(entra: dict[str, Any]) -> dict[str, Any]:
    """What examples/mapping.yaml gives the User fields it maps from plain attributes."""
    upn = entra["userPrincipalName"]
    return {"Title": entra.get("jobTitle"), "Department": entra.get("department"),
            "MobilePhone": entra.get("mobilePhone"), "EmployeeNumber": entra.get("employeeId"),
            "FederationIdentifier": upn, "Username": upn.lower(), "Email": (entra.get("mail") or upn).lower(),
            "FirstName": entra.get("givenName") or None}


def test_the_demo_dry_run_shows_the_seeded_drift_and_a_run_repairs_every_linked_user(stack) -> None:
    dry = _idsync(stack, "reconcile", "--dry-run", "--report", "plan.json")
    assert dry.returncode == 0, dry.stderr[-2000:]
    plan = json.loads((stack.tmp / "plan.json").read_text())
    assert plan["dry_run"] is True
    assert plan["drift_by_field"].get("Title") and plan["drift_by_field"].get("Department")
    assert plan["counts"]["create"] > 0  # users missing in Salesforce
    assert any(r["code"] == "INACTIVE_IN_SALESFORCE" for r in plan["reviews"])  # switched off by hand
    assert plan["counts"]["salesforce_only"] > 0  # users missing in Entra: reported only
    assert any(c["direct_edit"] for c in plan["changes"])
    assert "Title" in dry.stdout  # every change is printed

    done = _idsync(stack, "reconcile", "--report", "done.json", "--report", "done.html")
    assert done.returncode == 0, done.stderr[-2000:]

    tenant = GraphAdmin(stack.env)
    entra = {u["id"]: u for u in tenant.users(
        "userType eq 'Member'", select="id,userPrincipalName,jobTitle,department,mobilePhone,employeeId,mail,"
                                       "givenName,accountEnabled")}
    linked = {str(sf): str(e) for sf, e in stack.redis.hgetall(LINKS_BY_SF_KEY).items()}
    assert len(linked) >= plan["counts"]["create"]
    fields = ", ".join(["Id", "IsActive", *_mapped_values(next(iter(entra.values())))])
    records = {r["Id"]: r for r in stack.org.sf.query_all(f"SELECT {fields} FROM User")["records"]}
    compared = 0
    for sf_id, entra_id in linked.items():
        user = entra.get(entra_id)
        if user is None or not user["accountEnabled"]:
            continue  # a leaver: handed to the revocation lane, not field-synced
        record = records[sf_id]
        got = {k: (record.get(k).lower() if k in ("Username", "Email") and record.get(k) else record.get(k))
               for k in _mapped_values(user)}
        assert got == _mapped_values(user), user["userPrincipalName"]
        compared += 1
    assert compared >= 30

    again = _idsync(stack, "reconcile", "--dry-run", "--quiet", "--report", "again.json")
    assert again.returncode == 0, again.stderr[-2000:]
    counts = json.loads((stack.tmp / "again.json").read_text())["counts"]
    assert counts["create"] == 0 and counts["update"] == 0


def test_a_worker_killed_mid_run_is_resumed_by_the_next_run_without_writing_twice(stack, wait_for) -> None:
    stack.env["IDSYNC_RECONCILE_CHUNK_SIZE"] = "4"  # many chunks, so the kill lands mid-run
    expected = _idsync(stack, "reconcile", "--dry-run", "--quiet", "--report", "expected.json")
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

    resumed = _idsync(stack, "reconcile", "--quiet", "--report", "resumed.json")
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
    time.sleep(0.1)
    after = _idsync(stack, "reconcile", "--dry-run", "--quiet", "--report", "after.json")
    assert after.returncode == 0
    final = json.loads((stack.tmp / "after.json").read_text())["counts"]
    assert final["create"] == 0 and final["update"] == 0


def test_a_report_with_an_unknown_extension_is_refused_before_anything_runs(stack) -> None:
    done = _idsync(stack, "reconcile", "--dry-run", "--report", "plan.pdf")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("idsync: --report plan.pdf") and "Traceback" not in done.stderr
    assert not Path(stack.tmp / "plan.pdf").exists()
