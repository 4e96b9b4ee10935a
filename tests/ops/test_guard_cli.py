"""`idsync status`, `held`, `approve` and `reject` for the mass-deprovisioning guard: held runs are the first thing
status shows, a decision queues its work through the dispatch table, and a problem is one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from shared.deprovision_guard import REVIEW_TOPIC, DeprovisionGuard
from shared.identity_links import IdentityLinks
from shared.settings import load_settings

ENV_GUARD = {"IDSYNC_GUARD_MAX_COUNT": "2", "IDSYNC_GUARD_MAX_SHARE": "0"}


def _run(redis_server: Any, tmp_path: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_LOG_JSON": "true",
           "COLUMNS": "250", **ENV_GUARD}
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.fixture
def guard(redis_server: Any, redis_client: Any) -> DeprovisionGuard:
    return DeprovisionGuard(redis_client, load_settings(_env_file=None, redis_url=redis_server.url,
                                                        guard_max_count=2, guard_max_share=0.0))


@pytest.fixture
def run_id(guard: DeprovisionGuard) -> str:
    """A live burst: a and b deactivated, c and d held."""
    for entra_id in "abcd":
        check = guard.check_deactivation(entra_id, f"005{entra_id}", f"{entra_id}@contoso.com", "leaver: test")
    assert check.run_id is not None
    return check.run_id


def _queued(redis_client: Any, queue: str) -> list[tuple[str, str]]:
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        out.append((message["headers"]["task"], message["headers"]["argsrepr"]))
    return out


def test_status_shows_held_runs_first_and_in_json(redis_server, run_id, tmp_path) -> None:
    text = _run(redis_server, tmp_path, "status")
    assert text.returncode == 0, text.stderr
    first = text.stdout.split("Lanes")[0]
    assert "DEACTIVATIONS HELD" in first and run_id in first and "idsync approve RUN_ID" in first
    data = json.loads(_run(redis_server, tmp_path, "status", "--json").stdout)
    [run] = data["guard"]["held_runs"]
    assert (run["run_id"], run["mode"], run["count"], data["guard"]["held_users"]) == (run_id, "live", 2, 2)
    assert run["held_at"].endswith("Z") and "exceed the limit of 2" in run["reason"]


def test_held_lists_the_runs_and_the_users_of_one(redis_server, run_id, tmp_path) -> None:
    runs = _run(redis_server, tmp_path, "held")
    assert runs.returncode == 0 and run_id in runs.stdout
    users = json.loads(_run(redis_server, tmp_path, "held", run_id, "--json").stdout)
    assert [(u["entra_id"], u["upn"], u["rule"]) for u in users] == [("c", "c@contoso.com", "leaver: test"),
                                                                      ("d", "d@contoso.com", "leaver: test")]


def test_approve_queues_one_release_per_held_user_on_the_revocation_lane(redis_server, redis_client, guard, run_id,
                                                                         tmp_path) -> None:
    result = _run(redis_server, tmp_path, "approve", run_id)
    assert result.returncode == 0, result.stderr
    assert f"{run_id}: approved; 2 deactivations queued" in result.stdout
    queued = _queued(redis_client, "revocation")
    assert [task for task, _ in queued] == ["revocation.release_held"] * 2
    assert sorted(re.findall(r"'object_id': '(\w+)'", " ".join(arg for _, arg in queued))) == ["c", "d"]
    assert guard.held_runs() == []


def test_reject_replans_the_users_on_the_sync_lane_and_keeps_them_from_deactivation(
        redis_server, redis_client, guard, run_id, tmp_path) -> None:
    from shared.dirty_users import DirtyUsers

    result = _run(redis_server, tmp_path, "reject", run_id)
    assert result.returncode == 0, result.stderr
    assert f"{run_id}: rejected; nobody in it is deactivated. 2 users planned again" in result.stdout
    assert DirtyUsers(redis_client).pending() == 2
    assert [task for task, _ in _queued(redis_client, "sync")] == ["sync.drain_users"]
    assert guard.check_deactivation("c", "005c", "c@contoso.com").decision == "rejected"


def test_review_resolve_retry_of_a_rejected_user_forgets_the_rejection(redis_server, redis_client, guard, run_id,
                                                                       tmp_path) -> None:
    guard.reject(run_id, "operator:alice")
    links = IdentityLinks(redis_client)
    item = links.add_review("c", "005c", "deprovision_rejected", "frozen, not deactivated", topic=REVIEW_TOPIC)
    result = _run(redis_server, tmp_path, "review", "resolve", item["id"], "--retry")
    assert result.returncode == 0, result.stderr
    assert [task for task, _ in _queued(redis_client, "revocation")] == ["revocation.retry_deactivation"]
    assert links.review("c", REVIEW_TOPIC) is None
    assert guard.check_deactivation("c", "005c", "c@contoso.com").decision != "rejected"


@pytest.mark.parametrize("command", ["approve", "reject", "held"])
def test_an_unknown_run_is_one_line_pointing_to_idsync_held_and_exit_2(redis_server, guard, run_id, tmp_path,
                                                                         command) -> None:
    unknown = _run(redis_server, tmp_path, command, "live-19700101-9")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr == "idsync: no held run 'live-19700101-9' (`idsync held` lists the held runs)\n"
    listed = _run(redis_server, tmp_path, "held")  # and `idsync held` is indeed the list
    assert listed.returncode == 0 and run_id in listed.stdout and "Held runs (1)" in listed.stdout


def test_a_run_already_decided_the_other_way_is_one_line_and_exit_1(redis_server, guard, run_id, tmp_path) -> None:
    guard.reject(run_id, "operator:alice")
    twice = _run(redis_server, tmp_path, "approve", run_id)
    assert twice.returncode == 1 and twice.stderr.strip() == (
        f"idsync: run {run_id} was rejected already, by operator:alice")
    assert "Traceback" not in twice.stderr
