"""The operator's CLI against a real Redis: DLQ listing, showing, purging; status; durations. Times are ISO 8601 (and
relative for people), never epoch floats."""

import json
import subprocess
import sys
import time
from datetime import datetime

import pytest
import typer

from ops.cli import parse_duration
from ops.time_display import iso
from shared.dlq import Attempt, DeadLetter, DeadLetterQueue

TRACEBACK = 'Traceback (most recent call last):\n  File "workers/sync.py", line 9, in run\nValueError: boom'


def _run(redis_server, tmp_path, *args):
    # COLUMNS: wide enough that rich does not fold table cells, so tests can look for whole values.
    env = {"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_LOG_JSON": "true", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=60)


def _dead(redis_client, entry_id: str, lane: str, age_s: float = 0) -> None:
    now = time.time() - age_s
    DeadLetterQueue(redis_client, 100, 86400 * 30).put(DeadLetter(
        id=entry_id, task=f"{lane}.x", args=[{"id": "e1"}], kwargs={}, headers={}, lane=lane,
        error_class="PermanentError", error_message="REQUIRED_FIELD_MISSING", traceback=TRACEBACK, attempts=2,
        first_failed_at=now - 180, last_failed_at=now, correlation_id="corr-1", event_id="e1",
        history=[Attempt(time=now - 180, error_class="RetryableError", message="Salesforce 503"),
                 Attempt(time=now, error_class="PermanentError", message="REQUIRED_FIELD_MISSING")]))


def _is_iso(value: object) -> bool:
    return isinstance(value, str) and value.endswith("Z") and datetime.fromisoformat(value) is not None


def test_durations_accept_seconds_minutes_hours_and_days():
    assert [parse_duration(t) for t in ("90", "30s", "15m", "12h", "7d")] == [90, 30, 900, 43200, 604800]
    with pytest.raises(typer.BadParameter):
        parse_duration("a week")


def test_dlq_list_json_filters_by_lane_and_show_prints_the_entry(redis_server, redis_client, tmp_path):
    _dead(redis_client, "d1", "revocation")
    _dead(redis_client, "d2", "sync")
    listed = json.loads(_run(redis_server, tmp_path, "dlq", "list", "--lane", "sync", "--json").stdout)
    assert [e["id"] for e in listed] == ["d2"]
    shown = _run(redis_server, tmp_path, "dlq", "show", "d1", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["correlation_id"] == "corr-1"



@pytest.mark.parametrize("command", ["show", "replay"])
def test_an_unknown_dead_letter_is_one_line_on_stderr_and_exit_2(redis_server, redis_client, tmp_path, command):
    _dead(redis_client, "d1", "sync")
    result = _run(redis_server, tmp_path, "dlq", command, "nope")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "idsync: no dead letter 'nope' (`idsync dlq list` lists them)\n"
    assert [e.id for e in DeadLetterQueue(redis_client, 100, 86400).list()] == ["d1"]  # nothing else touched


def test_dlq_json_times_are_iso_8601_with_the_first_failure_and_the_attempt_history(
    redis_server, redis_client, tmp_path
):
    _dead(redis_client, "d1", "revocation")
    [listed] = json.loads(_run(redis_server, tmp_path, "dlq", "list", "--json").stdout)
    shown = json.loads(_run(redis_server, tmp_path, "dlq", "show", "d1", "--json").stdout)
    for entry in (listed, shown):
        assert _is_iso(entry["first_failed_at"]) and _is_iso(entry["last_failed_at"])
        assert entry["first_failed_at"] < entry["last_failed_at"]
        assert [a["error_class"] for a in entry["history"]] == ["RetryableError", "PermanentError"]
        assert all(_is_iso(a["time"]) for a in entry["history"])


def test_dlq_list_shows_times_as_iso_and_relative_not_epoch_floats(redis_server, redis_client, tmp_path):
    _dead(redis_client, "d1", "revocation")
    entry = DeadLetterQueue(redis_client, 100, 86400).get("d1")
    assert entry is not None
    first_failed_at = entry.first_failed_at
    out = _run(redis_server, tmp_path, "dlq", "list").stdout
    assert f"{iso(first_failed_at, timespec='seconds')} (3 min ago)" in out
    assert str(int(first_failed_at))[:6] not in out  # no epoch seconds


def test_dlq_show_prints_the_traceback_as_lines_and_the_attempt_history(redis_server, redis_client, tmp_path):
    _dead(redis_client, "d1", "revocation")
    out = _run(redis_server, tmp_path, "dlq", "show", "d1").stdout
    lines = out.splitlines()
    assert "  Traceback (most recent call last):" in lines and "  ValueError: boom" in lines
    assert "\\n" not in out
    assert any("RetryableError: Salesforce 503" in line for line in lines)
    assert any(line.startswith("first failure") and "(3 min ago)" in line for line in lines)


def test_dlq_purge_removes_only_entries_older_than_the_given_age(redis_server, redis_client, tmp_path):
    _dead(redis_client, "old", "sync", age_s=3 * 86400)
    _dead(redis_client, "new", "sync")
    result = _run(redis_server, tmp_path, "dlq", "purge", "--older-than", "2d")
    assert result.returncode == 0 and "purged 1" in result.stdout
    assert [e.id for e in DeadLetterQueue(redis_client, 100, 86400 * 30).list()] == ["new"]


def test_dlq_replay_needs_an_id_or_all(redis_server, tmp_path):
    result = _run(redis_server, tmp_path, "dlq", "replay")
    assert result.returncode != 0 and "--all" in result.stderr


def test_status_json_reports_lanes_dlq_and_oldest_message_age(redis_server, redis_client, tmp_path):
    _dead(redis_client, "d1", "revocation")
    redis_client.lpush("sync", json.dumps({"headers": {"published_at": f"{time.time() - 5:.3f}"}}))
    status = json.loads(_run(redis_server, tmp_path, "status", "--json").stdout)
    assert status["lanes"]["revocation"]["dlq"] == 1
    assert status["lanes"]["sync"]["depth"] == 1 and status["lanes"]["sync"]["oldest_age_s"] >= 5
    assert status["lanes"]["revocation"]["oldest_age_s"] is None
    assert set(status) >= {"delta", "subscriptions", "api", "parked", "reviews", "recent_revocations"}
    assert set(status["lanes"]["sync"]) >= {"running", "retrying", "parked", "dlq_dropped"}


def test_status_json_prints_every_time_as_iso_8601(redis_server, redis_client, tmp_path):
    from producers.checkpoints import DeltaCheckpoints
    from shared import audit

    DeltaCheckpoints(redis_client, "default").record_round("users", events=1, pages=1, items=1, resynced=False)
    audit.audit(redis_client, "revoke", "u1", "005A", "revoked", "c1", observed_at=time.time() - 2, upn="a@x.com")
    status = json.loads(_run(redis_server, tmp_path, "status", "--json").stdout)
    [revocation] = status["recent_revocations"]
    assert _is_iso(revocation["ts"]) and _is_iso(revocation["detail"]["observed_at"])
    assert revocation["upn"] == "a@x.com"
    assert _is_iso(status["delta"]["users"]["time"])


def test_status_shows_the_upn_of_recent_revocations_and_retrying_and_parked_per_lane(
    redis_server, redis_client, tmp_path
):
    from shared import audit, parking

    audit.audit(redis_client, "revoke", "u1", "005A", "revoked", "c1", upn="leaver@contoso.com")
    parking.park(redis_client, "revocation.revoke_user", [], {}, {}, "revocation", time.time() + 600)
    out = _run(redis_server, tmp_path, "status").stdout
    assert "leaver@contoso.com" in out
    assert "retrying" in out and "parked" in out


def test_commands_that_need_redis_explain_how_to_get_one(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ops", "dlq", "list"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode != 0 and "IDSYNC_REDIS_URL" in result.stderr


def test_health_reports_a_missing_poller_heartbeat(redis_server, tmp_path):
    result = _run(redis_server, tmp_path, "health", "poller")
    assert result.returncode == 1 and "poller" in result.stdout
    assert _run(redis_server, tmp_path, "health", "redis").returncode == 0


def test_health_is_good_once_the_poller_has_finished_a_round(redis_server, redis_client, tmp_path):
    from producers.checkpoints import DeltaCheckpoints

    checkpoints = DeltaCheckpoints(redis_client, "default")
    for resource in ("users", "groups"):
        checkpoints.record_success(resource)
    result = _run(redis_server, tmp_path, "health", "poller")
    assert result.returncode == 0 and "healthy" in result.stdout


def test_health_is_bad_when_the_last_rounds_failed_even_right_after_a_success(redis_server, redis_client, tmp_path):
    """After a restart the previous run's success is recent while every new round fails: that is not healthy."""
    from producers.checkpoints import DeltaCheckpoints
    from shared.errors import TransportError

    checkpoints = DeltaCheckpoints(redis_client, "default")
    for resource in ("users", "groups"):
        checkpoints.record_success(resource)
    for _ in range(3):
        checkpoints.record_failure("users", TransportError("connection failed: ConnectError", service="graph"))
    result = _run(redis_server, tmp_path, "health", "poller")
    assert result.returncode == 1
    assert "3 rounds failed" in result.stdout and "TransportError" in result.stdout


def test_status_shows_the_last_delta_error_per_resource(redis_server, redis_client, tmp_path):
    from producers.checkpoints import DeltaCheckpoints

    checkpoints = DeltaCheckpoints(redis_client, "default")
    checkpoints.record_round("users", events=1, pages=1, items=1, resynced=False)
    checkpoints.record_failure("users", ValueError("refusing a link outside https://127.0.0.1:9/v1.0"))
    status = json.loads(_run(redis_server, tmp_path, "status", "--json").stdout)
    assert status["delta_outcome"]["users"]["last_error"]["class"] == "ValueError"
    assert status["delta_outcome"]["users"]["consecutive_failures"] == 1
    assert status["delta_outcome"]["groups"]["last_error"] is None
    human = _run(redis_server, tmp_path, "status")
    assert human.returncode == 0
    assert "ValueError: refusing a link outside" in " ".join(human.stdout.split())


def test_the_request_poller_says_in_one_line_when_the_mapping_leaves_requests_off(redis_server, tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("requests: {enabled: false}\n")
    env = {"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_MAPPING_FILE": str(mapping)}
    result = subprocess.run([sys.executable, "-m", "ops", "request-poller", "--once"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("idsync: the reverse flow is off — set requests: {enabled: true} in the mapping "
                                     "file (docs/guests-and-requests.md)")


def test_interactive_commands_log_readable_warnings_on_stderr_and_nothing_below_warning(tmp_path):
    """What `main()` sets up before every command: stdout holds the command's answer only; a warning is one readable
    line on stderr (JSON even when IDSYNC_LOG_JSON asks for it is for the long-running components); info is not
    shown."""
    script = ("from ops.cli import _quiet_logging\n_quiet_logging()\nfrom shared.logging import get_logger\n"
              "log = get_logger('idsync.reconcile')\nlog.info('reconcile_deprovisions_allowed', deprovisions=2)\n"
              "log.warning('reconcile_deprovisions_held', deprovisions=40)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "IDSYNC_LOG_JSON": "true"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "reconcile_deprovisions_held" in line and "deprovisions=40" in line and "warning" in line
    assert not line.lstrip().startswith("{")
