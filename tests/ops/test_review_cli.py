"""`idsync review list|show`: why a deactivation was blocked, readable without digging through JSON logs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from ops.time_display import iso
from shared.identity_links import IdentityLinks


def _run(redis_server, tmp_path, *args):
    env = {"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_LOG_JSON": "true", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "ops", "review", *args], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.fixture
def blocked(redis_client) -> dict:
    return IdentityLinks(redis_client).add_review(
        "0a1b2c3d-0000-4000-8000-000000000009", "005000000000009AAA", "deactivation_blocked",
        "user is frozen but Salesforce refuses deactivation: CANNOT_DISABLE_LAST_ADMIN: last active admin",
        upn="admin@contoso.com", code="CANNOT_DISABLE_LAST_ADMIN", correlation_id="corr-9")


def test_review_list_names_the_user_and_the_reason_salesforce_gave(redis_server, blocked, tmp_path):
    result = _run(redis_server, tmp_path, "list")
    assert result.returncode == 0, result.stderr
    assert blocked["id"] in result.stdout and "admin@contoso.com" in result.stdout
    assert "CANNOT_DISABLE_LAST_ADMIN" in result.stdout
    assert iso(blocked["created_at"], timespec="seconds") in result.stdout


def test_review_show_by_id_or_entra_id_explains_the_block(redis_server, blocked, tmp_path):
    by_id = _run(redis_server, tmp_path, "show", blocked["id"])
    by_entra_id = _run(redis_server, tmp_path, "show", blocked["entra_id"])
    assert by_id.returncode == 0 and by_id.stdout.splitlines()[:5] == by_entra_id.stdout.splitlines()[:5]
    assert "last active admin" in by_id.stdout and "005000000000009AAA" in by_id.stdout
    assert "corr-9" in by_id.stdout


def test_review_json_output_has_iso_times_and_the_stable_id(redis_server, blocked, tmp_path):
    [listed] = json.loads(_run(redis_server, tmp_path, "list", "--json").stdout)
    shown = json.loads(_run(redis_server, tmp_path, "show", blocked["id"], "--json").stdout)
    assert listed == shown and shown["id"] == blocked["id"]
    assert shown["created_at"].endswith("Z") and datetime.fromisoformat(shown["created_at"])


@pytest.mark.parametrize("args", [["show", "nope"], ["show", "nope", "--json"], ["resolve", "nope", "--retry"],
                                  ["resolve", "nope", "--ignore"], ["resolve", "nope", "--create"]])
def test_an_unknown_review_item_is_one_line_on_stderr_and_exit_2(redis_server, tmp_path, args):
    result = _run(redis_server, tmp_path, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "idsync: no review item 'nope' (`idsync review list` lists the open items)\n"


def _queued(redis_client, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in redis_client.lrange(queue, 0, -1)]


def test_review_resolve_retry_queues_the_deactivation_retry_at_once(redis_server, redis_client, blocked, tmp_path):
    result = _run(redis_server, tmp_path, "resolve", blocked["id"], "--retry")
    assert result.returncode == 0, result.stderr
    assert "revocation.retry_deactivation" in result.stdout
    assert _queued(redis_client, "revocation") == ["revocation.retry_deactivation"]
    assert IdentityLinks(redis_client).get_review(blocked["id"]) is not None  # closes only when the retry succeeds


def test_review_resolve_retry_of_unplaced_records_runs_the_transfer_again(redis_server, redis_client, tmp_path):
    item = IdentityLinks(redis_client).add_review(
        "0a1b2c3d-0000-4000-8000-000000000010", "005000000000010AAA", "records_unplaced", "2 open records ...",
        topic="ownership", fix="...", extra={"records": [], "record_count": 2})
    result = _run(redis_server, tmp_path, "resolve", item["id"], "--retry")
    assert result.returncode == 0, result.stderr
    assert _queued(redis_client, "sync") == ["sync.transfer_ownership"]


def test_review_resolve_needs_one_action_and_an_item_it_applies_to(redis_server, redis_client, tmp_path):
    item = IdentityLinks(redis_client).add_review("0a1b2c3d-0000-4000-8000-000000000011", None, "match_several",
                                                  "two Salesforce users match", topic="matching")
    no_action = _run(redis_server, tmp_path, "resolve", item["id"])
    assert no_action.returncode == 2 and "choose one action: --retry" in no_action.stderr
    wrong = _run(redis_server, tmp_path, "resolve", item["id"], "--retry")
    assert wrong.returncode == 2 and wrong.stderr == "idsync: --retry does not apply to a 'match_several' item\n"
    assert "Traceback" not in wrong.stdout + wrong.stderr + no_action.stderr
    assert redis_client.llen("revocation") == 0 and redis_client.llen("sync") == 0
