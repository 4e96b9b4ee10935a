"""Done-when #1: `idsync run` (what `make run` starts) brings everything up on the sandbox; disabling a user through
the sandbox's Graph API freezes and deactivates the Salesforce user, visible in the logs and in `idsync status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ops.runenv import read_env_file

pytestmark = pytest.mark.integration


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}


def test_idsync_run_revokes_a_disabled_user_and_status_shows_it(tmp_path, wait_for, admin_clients):
    TenantAdmin, OrgAdmin = admin_clients  # noqa: N806
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ops", "run"], cwd=tmp_path, env=_clean_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run_env = tmp_path / "var" / "run.env"
        wait_for(lambda: run_env.exists() or proc.poll() is not None, timeout=90, what="var/run.env")
        assert proc.poll() is None, log_path.read_text()[-3000:]
        env = {**read_env_file(tmp_path / "var" / "sandbox.env"), **read_env_file(run_env)}
        assert env["IDSYNC_REDIS_URL"].startswith("redis://127.0.0.1:")
        assert env["IDSYNC_RUN_WEBHOOK_URL"].endswith("/graph/notifications")
        assert env["IDSYNC_RUN_FLOWER_URL"].startswith("http://127.0.0.1:")
        wait_for(lambda: "idsync is running" in log_path.read_text(), timeout=30, what="the start-up banner")

        tenant, org = TenantAdmin(env), OrgAdmin(env)
        # the beat process creates the Graph subscriptions once the webhook answers the validation handshake
        wait_for(lambda: b"subscription_created" in log_path.read_bytes()
                 or b'"subscriptions"' in _status(tmp_path), timeout=60, what="subscriptions")
        members = tenant.http.get("/users", params={"$filter": "accountEnabled eq true and userType eq 'Member'",
                                                     "$select": "id,userPrincipalName", "$top": 999}).json()
        target = next(u for u in members["value"]
                      if (sf := org.user(u["userPrincipalName"])) and sf["IsActive"])
        sf_user = org.user(target["userPrincipalName"])

        tenant.disable(target["id"])

        wait_for(lambda: org.user(target["userPrincipalName"])["IsActive"] is False, timeout=30,
                 what="Salesforce user deactivated")
        assert org.frozen(sf_user["Id"])
        status = json.loads(_status(tmp_path, "--json"))
        assert any(r["entra_id"] == target["id"] and r["outcome"] == "revoked" for r in status["recent_revocations"])
        assert set(status["lanes"]) == {"revocation", "sync"}
        assert status["subscriptions"], "subscription expiry is reported"
        logs = log_path.read_text()
        assert target["id"] in logs and "revoke" in logs
        _check_audit_trail_and_metrics(tmp_path, env, target, wait_for)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, log_path.read_text()[-3000:]
    assert not (tmp_path / "var" / "run.env").exists()


def _status(cwd, *args: str) -> bytes:
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run([sys.executable, "-m", "ops", "status", *args], cwd=cwd, env=_clean_env(),
                                capture_output=True, timeout=60)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result.stdout + result.stderr
        time.sleep(0.5)


def _check_audit_trail_and_metrics(cwd, env: dict[str, str], target: dict, wait_for) -> None:
    """README "Try the audit trail": after a leaver, the chain verifies, the HTML report shows the revocation with its
    latency, and the revocation worker's /metrics counts it."""
    import re

    import httpx

    def audited() -> bool:
        trail = cwd / "var" / "audit"
        text = "".join(p.read_text() for p in trail.glob("audit-*.jsonl")) if trail.exists() else ""
        return f'"entra_id":"{target["id"]}"' in text and '"outcome":"revoked"' in text

    wait_for(audited, timeout=30, what="the revocation in the JSONL audit trail")
    verified = subprocess.run([sys.executable, "-m", "ops", "audit", "verify"], cwd=cwd, env=_clean_env(),
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "the chain is intact" in verified.stdout, verified.stdout + verified.stderr
    report = cwd / "report.html"
    made = subprocess.run([sys.executable, "-m", "ops", "audit", "report", "--output", str(report)], cwd=cwd,
                          env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    page = report.read_text()
    section = page[page.index(f"<h2>{target['userPrincipalName']}</h2>"):]
    assert re.search(r"<td class=revoked>revoked</td>.*?<td class=num>[\d,.]+ m?s</td>", section, re.DOTALL)
    metrics = httpx.get(f"http://127.0.0.1:{env['IDSYNC_METRICS_PORT_WORKER_REVOCATION']}/metrics", timeout=5,
                        trust_env=False).text
    assert re.search(r'idsync_revocation_latency_seconds_count\{outcome="revoked"\} [1-9]', metrics)
