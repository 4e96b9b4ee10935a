"""Every `idsync` command answers a problem with one line on stderr and a non-zero exit, never a traceback.

Exit 2 means "fix the configuration", 1 "a service is not there".
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from ops.cli.app import Lane
from ops.embedded_redis import free_port
from shared.dispatch import LANES
from tests.env_files import SANDBOX, write_env

GRAPH_ONLY = {
    "IDSYNC_GRAPH_AUTHORITY": "https://login.microsoftonline.com/t1",
    "IDSYNC_GRAPH_TENANT_ID": "t1",
    "IDSYNC_GRAPH_CLIENT_ID": "app",
    "IDSYNC_GRAPH_CLIENT_SECRET": "secret",
}


def _idsync(cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=timeout)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # bound once and released: nothing listens there


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["dlq", "list"], ["dlq", "show", "x"]])
def test_commands_with_redis_unreachable_answer_in_one_line(tmp_path, unreachable_redis, command):
    result = _idsync(tmp_path, *command, IDSYNC_REDIS_URL=unreachable_redis)
    assert result.returncode == 1
    line = _one_line(result)
    assert line.startswith(f"idsync: cannot reach Redis at {unreachable_redis} (")
    assert "IDSYNC_REDIS_URL" in line


def test_the_redis_password_is_not_printed_when_redis_is_unreachable(tmp_path):
    url = f"redis://:top-secret@127.0.0.1:{free_port()}/0"
    result = _idsync(tmp_path, "status", IDSYNC_REDIS_URL=url)
    assert "top-secret" not in result.stderr and ":***@" in _one_line(result)


def test_an_unknown_log_level_is_one_line_naming_the_setting(tmp_path):
    result = _idsync(tmp_path, "webhook", IDSYNC_LOG_LEVEL="LOUD")
    assert result.returncode == 2
    assert _one_line(result).startswith("idsync: invalid setting IDSYNC_LOG_LEVEL: Input should be 'DEBUG'")


def test_one_tenant_variable_next_to_the_sandbox_env_names_what_is_missing(tmp_path):
    write_env(tmp_path / "var" / "sandbox.env", SANDBOX)
    result = _idsync(tmp_path, "poll", "--once", IDSYNC_GRAPH_CLIENT_ID="x")
    assert result.returncode == 2
    assert _one_line(result).startswith(
        "idsync: invalid setting IDSYNC_GRAPH_AUTHORITY, IDSYNC_GRAPH_TENANT_ID, IDSYNC_GRAPH_CLIENT_SECRET are "
        "missing (set together with IDSYNC_GRAPH_CLIENT_ID)")


@pytest.mark.parametrize("command", [["poll", "--once"], ["worker", "--lane", "sync"], ["beat"], ["webhook"]])
def test_graph_without_salesforce_stops_every_component_naming_the_salesforce_settings(tmp_path, command):
    write_env(tmp_path / ".env", GRAPH_ONLY)
    result = _idsync(tmp_path, *command, IDSYNC_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert _one_line(result).startswith(
        "idsync: invalid setting IDSYNC_SF_URL, IDSYNC_SF_CLIENT_ID, IDSYNC_SF_CLIENT_SECRET are missing")


def test_run_with_half_a_tenant_refuses_to_start_instead_of_starting_the_sandbox(tmp_path):
    write_env(tmp_path / ".env", GRAPH_ONLY)
    result = _idsync(tmp_path, "run")
    assert result.returncode == 2
    assert "IDSYNC_SF_URL" in _one_line(result)
    assert "starting the sandbox" not in result.stdout and not (tmp_path / "var" / "sandbox").exists()


def test_a_malformed_dot_env_line_is_named_with_its_line_number(tmp_path):
    (tmp_path / ".env").write_text("IDSYNC_LOG_LEVEL=INFO\nIDSYNC_REDIS_URL: redis://127.0.0.1:6379/0\n")
    result = _idsync(tmp_path, "status")
    assert result.returncode == 2
    assert _one_line(result).startswith("idsync: .env:2: cannot parse 'IDSYNC_REDIS_URL: redis://")


def test_a_misspelt_setting_is_warned_about_without_stopping_the_command(tmp_path):
    result = _idsync(tmp_path, "config", IDSYNC_DELTA_INTERVAL="30")  # the setting is IDSYNC_DELTA_INTERVAL_S
    assert result.returncode == 0
    assert _one_line(result) == ("idsync: warning: IDSYNC_DELTA_INTERVAL (environment) is not a setting; did you mean "
                                 "IDSYNC_DELTA_INTERVAL_S?")


def test_version_prints_the_package_version(tmp_path):
    from importlib.metadata import version

    result = _idsync(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"idsync {version('idsync')}"


@pytest.mark.parametrize("command", [["dlq", "list"], ["dlq", "purge", "--older-than", "1d"],
                                     ["dlq", "replay", "--all"],
                                     ["worker"]])
def test_a_bogus_lane_is_refused_before_anything_runs(tmp_path, command):
    result = _idsync(tmp_path, *command, "--lane", "bogus")
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("idsync: Invalid value for '--lane': 'bogus' is not one of 'revocation', 'sync'")
    assert line.endswith("--help`")


def test_the_lane_choices_are_the_dispatch_lanes():
    assert get_args(Lane) == LANES


def test_poll_once_with_the_sandbox_gone_says_graph_is_unreachable(tmp_path, redis_server):
    import trustme

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    port = free_port()
    stopped = {k: v.replace(":8443", f":{port}") for k, v in SANDBOX.items()}
    write_env(tmp_path / "var" / "sandbox.env", {**stopped, "IDSYNC_CA_BUNDLE": str(ca)})
    result = _idsync(tmp_path, "poll", "--once", IDSYNC_REDIS_URL=redis_server.url, IDSYNC_LOG_LEVEL="CRITICAL")
    assert result.returncode == 1
    line = _one_line(result)
    assert line.startswith("idsync: graph") and "is Microsoft Graph reachable?" in line


def test_the_boundary_sorts_failures_into_configuration_and_unavailable_services():
    from ops.cli.errors import explain
    from shared.errors import AuthenticationFailed, TransportError
    from shared.settings import SettingsError

    assert explain(SettingsError("IDSYNC_X: bad"))[0] == 2
    assert explain(AuthenticationFailed("invalid_client", service="salesforce", status=400))[0] == 2
    code, line = explain(TransportError("connect timeout", service="salesforce"))
    assert code == 1 and line.startswith("idsync: salesforce: connect timeout — is Salesforce reachable?")
    assert explain(ssl.SSLError(0, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found"))[1].endswith(
        "check IDSYNC_CA_BUNDLE (a PEM file of CA certificates)")
    code, line = explain(KeyError("surprise"))
    assert code == 1 and line.startswith("idsync: unexpected KeyError: 'surprise' — this is a bug")


def test_a_file_error_points_to_the_path_and_a_port_error_to_the_port():
    import errno

    from ops.cli.errors import explain

    assert explain(FileExistsError(errno.EEXIST, "File exists", "plan.json")) == (
        1, "idsync: File exists (plan.json) — check the path and its permissions")
    assert explain(NotADirectoryError(errno.ENOTDIR, "Not a directory", "plan.json/x.html"))[1].endswith(
        "— check the path and its permissions")
    assert explain(OSError(errno.EADDRINUSE, "Address already in use"))[1] == (
        "idsync: Address already in use — the port is in use by another process (another `idsync run`?) or not "
        "available here")
    assert "port" not in explain(PermissionError(errno.EACCES, "Permission denied", "/var/x"))[1]


@pytest.fixture
def tenant_env(tmp_path, redis_server):
    """The settings of a running sandbox tenant (as `make run` writes them) and a real Redis."""
    from tests.shared.reconcile.conftest import seeded

    server = seeded(tmp_path / "sandbox", users=10, overlap=0.0)
    try:
        yield {**server.env(), "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_VAR_DIR": str(tmp_path / "var")}
    finally:
        server.stop()


@pytest.mark.parametrize("command", [["sync-user"], ["sync-user", "--dry-run"], ["offboard"],
                                     ["offboard", "--dry-run"]])
def test_an_unknown_user_is_bad_input_one_line_and_exit_2_for_every_command(tmp_path, tenant_env, command):
    result = _idsync(tmp_path, *command, "nobody@example.com", **tenant_env)
    assert result.returncode == 2 and result.stdout == ""
    assert _one_line(result).startswith("idsync: no Entra user 'nobody@example.com' (give a UPN or an object id")
