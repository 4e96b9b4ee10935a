"""`python -m sandbox`: flags, the env file hand-off, and a clean stop on SIGINT."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox.cli import build_parser, main
from sandbox.envfile import read_env_file

REPO = Path(__file__).resolve().parents[2]
ENV_KEYS = {
    "IDSYNC_GRAPH_AUTHORITY", "IDSYNC_GRAPH_URL", "IDSYNC_GRAPH_TENANT_ID", "IDSYNC_GRAPH_CLIENT_ID",
    "IDSYNC_GRAPH_CLIENT_SECRET", "IDSYNC_SF_URL", "IDSYNC_SF_CLIENT_ID", "IDSYNC_SF_CLIENT_SECRET",
    "IDSYNC_CA_BUNDLE", "IDSYNC_SANDBOX_ADMIN_URL", "IDSYNC_SANDBOX_ADMIN_TOKEN",
}


def test_defaults_match_the_documented_ones() -> None:
    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1"
    assert args.state_dir == Path("var/sandbox")
    assert args.env_file == Path("var/sandbox.env")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--set", "graph.delta_pagesize=5"], "graph.delta_pagesize"),
        (["--fault", "salesforce.error_kinds=503,boom"], "'boom'"),
        (["--set", "graph.ru_per_10s"], "SECTION.KEY=VALUE"),
        (["--overlap", "1.5"], "--overlap"),
    ],
)
def test_bad_flags_exit_with_a_usage_error_before_anything_starts(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--state-dir", str(tmp_path / "state"), "--env-file", str(tmp_path / "x.env")])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "state").exists(), "nothing may be created for a rejected command line"


def test_the_sandbox_writes_its_env_file_answers_over_https_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    env_file = tmp_path / "out" / "sandbox.env"
    argv = [
        sys.executable, "-m", "sandbox", "--users", "500", "--port", "0",
        "--env-file", str(env_file), "--state-dir", str(tmp_path / "state"),
        "--set", "graph.delta_page_size=123", "--fault", "salesforce.error_kinds=503,timeout",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not env_file.exists():
            assert proc.poll() is None, f"sandbox exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no env file"
            time.sleep(0.05)
        env = read_env_file(env_file)
        assert ENV_KEYS <= set(env)
        assert oct(env_file.stat().st_mode & 0o777) == oct(0o600)
        ca = env["IDSYNC_CA_BUNDLE"]
        assert os.path.isabs(ca) and Path(ca).read_text().startswith("-----BEGIN CERTIFICATE-----")
        base = env["IDSYNC_SANDBOX_ADMIN_URL"]
        assert env["IDSYNC_GRAPH_AUTHORITY"] == f"{base}/{env['IDSYNC_GRAPH_TENANT_ID']}"
        assert env["IDSYNC_GRAPH_URL"] == f"{base}/v1.0"

        with httpx.Client(verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=10) as http:
            discovery = http.get(f"{env['IDSYNC_GRAPH_AUTHORITY']}/v2.0/.well-known/openid-configuration")
            assert discovery.status_code == 200
            assert discovery.json()["token_endpoint"].startswith(env["IDSYNC_GRAPH_AUTHORITY"])
            admin = {"Authorization": f"Bearer {env['IDSYNC_SANDBOX_ADMIN_TOKEN']}"}
            assert http.get(f"{base}/_sandbox/config", headers=admin).json()["graph"]["delta_page_size"] == 123
            faults = http.get(f"{base}/_sandbox/faults", headers=admin).json()
            assert faults["salesforce"]["error_kinds"] == ["503", "timeout"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert env["IDSYNC_GRAPH_CLIENT_SECRET"] not in out, "secrets go to the env file, not the terminal"
    assert env["IDSYNC_SANDBOX_ADMIN_TOKEN"] not in out
    assert env["IDSYNC_GRAPH_URL"] in out and str(env_file) in out
