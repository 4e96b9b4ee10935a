"""An org larger than one REST page is read by Bulk API 2.0 query jobs, over real HTTPS against the sandbox's
`jobs/query`, and plans exactly what 2,000-row REST pages plan: the reader changes the cost, never the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from sandbox.server import SandboxServer
from shared import audit
from shared.provisioning.batch import SyncDeps
from shared.reconcile.runner import Options, Reconciler
from shared.settings import Settings
from tests.shared.reconcile.conftest import Setup, make_deps, seeded

USERS = 2500  # more User rows than one REST page (2,000), so the first page says there is more


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = seeded(tmp_path / "sandbox", users=USERS)
    try:
        yield server
    finally:
        server.stop()


def a_member_in_both(sandbox: SandboxServer) -> str:
    usernames = sandbox.state.org.unique[("User", "Username")]
    return next(str(u["userPrincipalName"]).lower() for u in sorted(sandbox.state.directory.users.values(),
                                                                    key=lambda u: str(u["userPrincipalName"]))
                if u.get("userType") == "Member" and u.get("accountEnabled") is not False
                and str(u["userPrincipalName"]).lower() in usernames)


def deps_with(settings: Settings, redis_client: redis_lib.Redis, threshold: int) -> SyncDeps:
    return make_deps(settings.model_copy(update={"reconcile_bulk_query_threshold": threshold}), redis_client)


def query_jobs(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [item for item in sandbox.state.activity.recent("sf_request", limit=500)
            if "jobs/query" in json.dumps(item)]


def plan_of(deps: SyncDeps) -> tuple[dict[str, int], list[str], int]:
    try:
        before = deps.sf.calls
        run = Reconciler(deps).run(Options(dry_run=True))
        changes = sorted(json.dumps(row, sort_keys=True, default=str) for row in run.rows("changes"))
        return run.counts(), changes, deps.sf.calls - before
    finally:
        deps.graph.close()
        deps.sf.close()


def test_a_large_org_is_read_by_query_jobs_and_planned_exactly_as_rest_pages_plan_it(
    sandbox: SandboxServer, settings: Settings, redis_client: redis_lib.Redis
) -> None:
    Setup(sandbox).edit_user(a_member_in_both(sandbox), Title="Typed in Setup")

    rest_counts, rest_changes, rest_calls = plan_of(deps_with(settings, redis_client, threshold=0))
    assert query_jobs(sandbox) == []
    bulk_counts, bulk_changes, bulk_calls = plan_of(deps_with(settings, redis_client, threshold=USERS // 2))

    jobs = query_jobs(sandbox)  # the User rows came from a query job: created, polled, its results read
    assert [(i["method"], i["status"]) for i in jobs][:2] == [("POST", 200), ("GET", 200)]
    assert any(str(i["path"]).endswith("/results") and i["status"] == 200 for i in jobs)
    assert bulk_counts == rest_counts
    assert bulk_changes == rest_changes
    assert rest_counts["update"] > 0 and any("Typed in Setup" in c for c in rest_changes)
    assert bulk_calls > 0 and rest_calls > 0


def test_a_run_that_reads_by_query_jobs_repairs_the_drift_it_found(
    sandbox: SandboxServer, settings: Settings, redis_client: redis_lib.Redis
) -> None:
    deps = deps_with(settings, redis_client, threshold=USERS // 2)
    try:
        applied = Reconciler(deps).run(Options())
        assert applied.counts()["update"] > 0
    finally:
        deps.graph.close()
        deps.sf.close()

    counts, _changes, _calls = plan_of(deps_with(settings, redis_client, threshold=USERS // 2))

    assert counts["update"] == 0  # a second look, through query jobs again, finds nothing left to repair


def test_a_run_with_more_users_to_write_than_the_bulk_threshold_writes_the_rest_through_bulk_jobs(
    sandbox: SandboxServer, settings: Settings, redis_client: redis_lib.Redis
) -> None:
    setup = Setup(sandbox)
    usernames = sandbox.state.org.unique[("User", "Username")]
    members = sorted(str(u["userPrincipalName"]).lower() for u in sandbox.state.directory.users.values()
                     if u.get("userType") == "Member" and u.get("accountEnabled") is not False
                     and str(u["userPrincipalName"]).lower() in usernames)
    for username in members[:600]:
        setup.edit_user(username, Title="Typed in Setup")
    tuned = settings.model_copy(update={"bulk_write_threshold": 100, "reconcile_write_chunk": 250})
    deps = make_deps(tuned, redis_client)
    try:
        run = Reconciler(deps).run(Options())
    finally:
        deps.graph.close()
        deps.sf.close()

    jobs = [i for i in sandbox.state.activity.recent("sf_request", limit=500)
            if i["method"] == "POST" and str(i["path"]).endswith("/jobs/ingest")]
    assert run.counts()["update"] >= 600
    assert len(jobs) >= 2  # after the first 100 users (collections, 10 at a time), chunks of 250 in one job each
    audited = {r["entra_id"] for r in audit.recent(redis_client, 100_000)
               if r["correlation_id"] == run.run_id and r["action"] == "field_update"}
    assert len(audited) == run.counts()["update"]  # every user written by a job is in the audit trail too
    counts, _changes, _calls = plan_of(deps_with(settings, redis_client, threshold=0))
    assert counts["update"] == 0  # every user written, by collections or by a job
