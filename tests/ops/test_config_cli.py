"""`idsync config`: every effective setting, secrets masked, and the layer (and line) each value came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.env_files import SANDBOX, write_env


def _config(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", "config", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=60)


def _lines(out: str) -> dict[str, tuple[str, str]]:
    """NAME -> (origin, value) from the text output."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        origin, assignment = line.split(None, 1)
        name, _, value = assignment.partition("=")
        rows[name] = (origin, value)
    return rows


def test_config_shows_every_setting_with_its_origin_like_git_show_origin(tmp_path):
    (tmp_path / ".env").write_text("# local overrides\nIDSYNC_FLOWER_PORT=5002\nIDSYNC_REDIS_URL=redis://dotenv:1/0\n")
    write_env(tmp_path / "var" / "run.env", {"IDSYNC_REDIS_URL": "redis://run:1/0", "IDSYNC_WEBHOOK_PORT": "7001"})
    result = _config(tmp_path, IDSYNC_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr
    rows = _lines(result.stdout)
    assert rows["IDSYNC_LOG_LEVEL"] == ("env", "DEBUG")
    assert rows["IDSYNC_FLOWER_PORT"] == (".env:2", "5002")
    assert rows["IDSYNC_REDIS_URL"] == (".env:3", "redis://dotenv:1/0")
    assert rows["IDSYNC_WEBHOOK_PORT"] == ("var/run.env:2", "7001")
    assert rows["IDSYNC_DELTA_INTERVAL_S"] == ("default", "60.0")
    assert rows["IDSYNC_GRAPH_CLIENT_ID"] == ("default", "")  # unset is shown, so every setting is listed
    assert len(rows) > 40 and result.stderr == ""


def test_config_masks_secrets_and_passwords_in_urls(tmp_path):
    write_env(tmp_path / "var" / "sandbox.env", SANDBOX)
    result = _config(tmp_path, IDSYNC_REDIS_URL="redis://:redis-password@127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    for secret in ("sandbox-graph-secret", "sandbox-sf-secret", "sandbox-admin-token", "redis-password",
                   "change-me-client-state"):
        assert secret not in result.stdout
    rows = _lines(result.stdout)
    assert rows["IDSYNC_GRAPH_CLIENT_SECRET"] == ("var/sandbox.env:5", "********")
    assert rows["IDSYNC_REDIS_URL"] == ("env", "redis://:***@127.0.0.1:6379/0")
    assert rows["IDSYNC_GRAPH_CLIENT_ID"] == ("var/sandbox.env:4", "sandbox-app")
    assert "# tenant: sandbox (var/sandbox.env)" in result.stdout


def test_config_json_gives_value_and_origin_per_setting(tmp_path):
    write_env(tmp_path / "var" / "sandbox.env", SANDBOX)
    write_env(tmp_path / ".env", {"IDSYNC_GRAPH_CLIENT_ID": "mine"})  # a tenant setting: the sandbox file is ignored
    result = _config(tmp_path, "--json")
    data = json.loads(result.stdout)
    assert data["settings"]["IDSYNC_GRAPH_CLIENT_ID"] == {"value": "mine", "origin": ".env:1"}
    assert data["settings"]["IDSYNC_SF_URL"] == {"value": None, "origin": "default"}
    assert data["files"] == [".env"]
    assert data["problems"][0].startswith("IDSYNC_GRAPH_AUTHORITY, IDSYNC_GRAPH_TENANT_ID, IDSYNC_GRAPH_CLIENT_SECRET")
    assert result.returncode == 2  # the half-configured tenant is still an error, after the values


def test_config_shows_an_invalid_value_and_its_origin_then_the_one_line_error(tmp_path):
    write_env(tmp_path / ".env", {"IDSYNC_WEBHOOK_PORT": "eighty"})
    result = _config(tmp_path)
    assert result.returncode == 2
    assert _lines(result.stdout)["IDSYNC_WEBHOOK_PORT"] == (".env:1", "eighty")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("idsync: invalid setting IDSYNC_WEBHOOK_PORT: ")
