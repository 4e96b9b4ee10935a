"""`idsync run` (what `make run` starts), as a subprocess on the sandbox: it brings everything up, a user disabled
through the sandbox's Graph API is frozen and deactivated in Salesforce and shows in `idsync status --json`; a
component that dies -- the embedded redis-server, a worker -- is restarted and the output says so; secrets stay out
of the output and out of files others can read; Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from shared.settings_sources import read_env_values

pytestmark = pytest.mark.integration


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}


class RunningIdsync:
    """One `idsync run` process tree in its own directory, and ways to look at it as an operator would."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.log_path = cwd / "run.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ops", "run"], cwd=cwd, env=_clean_env(),
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.exit_code: int | None = None
        self.started: list[psutil.Process] = []

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def env(self) -> dict[str, str]:
        return {**read_env_values(self.cwd / "var" / "sandbox.env"), **read_env_values(self.cwd / "var" / "run.env")}

    def status(self) -> dict[str, Any]:
        """`idsync status --json`, run in the same directory (it finds Redis through var/run.env)."""
        done = subprocess.run([sys.executable, "-m", "ops", "status", "--json"], cwd=self.cwd, env=_clean_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    def child(self, *words: str) -> psutil.Process:
        """The supervisor's direct child whose command line contains `words` in order."""
        for proc in psutil.Process(self.proc.pid).children():
            cmdline = " ".join(proc.cmdline())
            if " ".join(words) in cmdline:
                return proc
        pytest.fail(f"no child process running {' '.join(words)!r}")

    def stop(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        self.started = psutil.Process(self.proc.pid).children(recursive=True) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the foreground group
        try:
            self.exit_code = self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.exit_code = self.proc.wait(timeout=10)
        return self.exit_code


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdsync]:
    from tests.integration.conftest import wait_for

    running = RunningIdsync(tmp_path_factory.mktemp("idsync-run"))
    try:
        wait_for(lambda: "idsync is running" in running.output() or running.proc.poll() is not None, timeout=120,
                 interval=0.2, what="the start-up banner")
        assert running.proc.poll() is None, running.output()[-3000:]
        yield running
    finally:
        running.stop()
        for proc in running.started:  # never leave a process behind, whatever the test did
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _outcomes(status: dict[str, Any], entra_id: str) -> list[str]:
    """Outcomes of the user's revocations, oldest first (the webhook and the poller may both report a leaver)."""
    return [r["outcome"] for r in reversed(status["recent_revocations"]) if r["entra_id"] == entra_id]


def _deactivation_blockers(env: dict[str, str]) -> set[str]:
    import ssl

    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=env["IDSYNC_CA_BUNDLE"]), trust_env=False) as c:
        response = c.get(f"{env['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/salesforce/deactivation-blockers",
                         headers={"Authorization": f"Bearer {env['IDSYNC_SANDBOX_ADMIN_TOKEN']}"})
        response.raise_for_status()
        return set(response.json())


def _leaver_is_revoked(
    service: RunningIdsync, wait_for: Callable[..., Any], admins: Any, skip: int
) -> dict[str, Any]:
    """Disable an Entra member whose Salesforce user is active; it must be frozen, deactivated and in status."""
    tenant_admin, org_admin = admins
    env = service.env()
    tenant, org = tenant_admin(env), org_admin(env)
    members = tenant.http.get("/users", params={"$filter": "accountEnabled eq true and userType eq 'Member'",
                                                 "$select": "id,userPrincipalName", "$top": 999}).json()["value"]
    blockers = _deactivation_blockers(env)  # the seeded default lead and case owners stay frozen, never deactivated
    active = [u for u in members if (sf := org.user(u["userPrincipalName"])) and sf["IsActive"]
              and sf["Id"] not in blockers]
    assert len(active) > skip, "the sandbox has active Salesforce users to revoke"
    target = active[skip]
    sf_user = org.user(target["userPrincipalName"])
    assert _outcomes(service.status(), target["id"]) == []

    tenant.disable(target["id"])

    outcomes = wait_for(lambda: _outcomes(service.status(), target["id"]), timeout=90, interval=0.5,
                        what=f"{target['id']} in recent_revocations")
    # Revoked once; a second report of the same leaver (webhook and poller both see it) finds nothing left to do.
    assert outcomes[0] == "revoked"
    assert set(outcomes[1:]) <= {"already_revoked"}
    assert org.user(target["userPrincipalName"])["IsActive"] is False
    assert org.frozen(sf_user["Id"])
    return target


def test_the_try_a_leaver_steps_reown_the_leaver_s_open_records_per_the_demo_contract(service, wait_for):
    """README "Try a leaver", as a new user types it first thing: `sandbox.tenant disable` picks a member who owns
    open records, who is frozen and deactivated, and whose open records all get new owners; status and review list
    answer. (First in the module: later tests' leavers use up the seeded record owners.)"""
    wait_for(lambda: {s["resource"] for s in service.status()["subscriptions"]} == {"/users", "/groups"},
             timeout=90, interval=0.5, what="subscriptions")
    done = subprocess.run([sys.executable, "-m", "sandbox.tenant", "disable"], cwd=service.cwd, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Salesforce user deactivated" in done.stdout
    assert "every open record re-owned" in done.stdout, done.stdout
    upn = done.stdout.split("disabled ", 1)[1].split(" in Entra", 1)[0]
    shown = subprocess.run([sys.executable, "-m", "sandbox.tenant", "show", upn], cwd=service.cwd, env=_clean_env(),
                           capture_output=True, text=True, timeout=60)
    assert "IsActive=False IsFrozen=True; open records owned: none" in shown.stdout, shown.stdout
    status = service.status()
    assert status["pending_ownership_transfers"] == 0
    listed = subprocess.run([sys.executable, "-m", "ops", "review", "list"], cwd=service.cwd, env=_clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "Review items" in listed.stdout


def test_the_try_a_guest_and_try_a_request_steps_work_on_make_run(service, wait_for, admin_clients):
    """README "Try a guest" and "Try a request" as typed: the demo mapping turns the reverse flow on, so `idsync run`
    starts the request poller (it once did not: its settings were read before the sandbox started), a guest becomes
    a Contact under a new Account, a guest invited into Distributors is a Distributor, the guests seeded before
    idsync ran become Contacts through `idsync reconcile`, and an approved request becomes an Entra user and then
    one Salesforce user."""
    assert "polling Salesforce every 5 s for approved requests" in service.output()
    wait_for(lambda: {s["resource"] for s in service.status()["subscriptions"]} == {"/users", "/groups"},
             timeout=90, interval=0.5, what="subscriptions")  # as when a person reads the banner, then types
    tenant = [sys.executable, "-m", "sandbox.tenant"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*tenant, *args], cwd=service.cwd, env=_clean_env(), capture_output=True, text=True,
                              timeout=120)

    invited = run("invite", "ana.lima@newco.example.com", "--name", "Ana Lima")
    assert invited.returncode == 0, invited.stdout + invited.stderr
    assert "Contact Ana Lima under Account 'newco.example.com'" in invited.stdout, invited.stdout
    distributor = run("invite", "lee@partner2.example.net", "--name", "Lee Parts", "--group", "Distributors")
    assert distributor.returncode == 0, distributor.stdout + distributor.stderr
    assert "Relationship__c=Distributor" in distributor.stdout, distributor.stdout

    tenant_admin, org_admin = admin_clients
    env = service.env()
    seeded = {u["id"] for u in tenant_admin(env).http.get("/users", params={
        "$filter": "userType eq 'Guest'", "$select": "id,mail", "$top": 999}).json()["value"]}
    reconciled = subprocess.run([sys.executable, "-m", "ops", "reconcile", "--quiet"], cwd=service.cwd,
                                env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    org = org_admin(env)

    def linked_contacts() -> set[str]:
        rows = org.sf.query_all("SELECT Entra_Object_Id__c FROM Contact WHERE Entra_Object_Id__c != null")["records"]
        return {str(r["Entra_Object_Id__c"]) for r in rows}

    assert wait_for(lambda: seeded <= linked_contacts(), timeout=90, interval=0.5,
                    what="a Contact for every guest after `idsync reconcile`") is True
    requested = run("request", "--first", "Zoë", "--last", "O'Brien", "--department", "Finance", "--title", "Analyst")
    assert requested.returncode == 0, requested.stdout + requested.stderr
    assert "request Completed" in requested.stdout and "Entra user zoe.obrien@" in requested.stdout, requested.stdout
    assert re.search(r"Salesforce user zoe\.obrien@\S+ provisioned", requested.stdout), requested.stdout
    failed = run("request", "--first", "Ida", "--last", "Ghost", "--groups", "All Employees;Ghost Team")
    assert failed.returncode == 1
    assert "request Failed" in failed.stdout and "unknown Entra group 'Ghost Team'" in failed.stdout, failed.stdout


def test_idsync_run_revokes_a_disabled_user_and_status_shows_it(service, wait_for, admin_clients):
    env = service.env()
    assert re.fullmatch(r"redis://:[A-Za-z0-9_-]{24,}@127\.0\.0\.1:\d+/0", env["IDSYNC_REDIS_URL"])
    assert env["IDSYNC_RUN_WEBHOOK_URL"].endswith("/graph/notifications")
    assert env["IDSYNC_RUN_FLOWER_URL"].startswith("http://127.0.0.1:")
    # the beat process creates the Graph subscriptions once the webhook answers the validation handshake
    subscribed = wait_for(lambda: {s["resource"] for s in service.status()["subscriptions"]} == {"/users", "/groups"},
                          timeout=90, interval=0.5, what="both subscriptions in `idsync status --json`")
    assert subscribed is True

    target = _leaver_is_revoked(service, wait_for, admin_clients, skip=0)

    status = service.status()
    assert set(status["lanes"]) == {"revocation", "sync"}
    _check_audit_trail_and_metrics(service.cwd, service.env(), target, wait_for)


def test_the_redis_password_never_appears_in_the_output_and_secret_files_are_private(service, wait_for):
    env = service.env()
    password = env["IDSYNC_REDIS_URL"].split("@")[0].removeprefix("redis://:")
    port = env["IDSYNC_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=int(port)).ping()  # no password: refused
    assert f"redis://:***@127.0.0.1:{port}/0" in service.output()
    flower_password = wait_for(lambda: (service.cwd / "var" / "flower.password").exists(), timeout=60,
                               what="var/flower.password")
    assert flower_password is True
    for name in ("run.env", "sandbox.env", "flower.password"):
        assert stat.S_IMODE((service.cwd / "var" / name).stat().st_mode) == 0o600, name
    assert password not in service.output()


def test_a_killed_redis_server_and_worker_are_restarted_and_a_leaver_is_still_revoked(
    service, wait_for, admin_clients
):
    url = service.env()["IDSYNC_REDIS_URL"]
    client = redis.Redis.from_url(url, decode_responses=True)
    client.set("test:written-before-the-crash", "kept")
    redis_pid = int(client.info("server")["process_id"])
    worker = service.child("worker", "--lane", "revocation")
    before = service.output()

    os.kill(redis_pid, signal.SIGKILL)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool processes, as an OOM kill of its container

    def announced(name: str) -> int:
        after = service.output()[len(before):]
        exited = re.search(rf"^{name} exited with code -9 \(SIGKILL\); restarting in \d+\.\ds$", after, re.M)
        restarted = re.search(rf"^{name} restarted \(pid (\d+)\)$", after, re.M)
        return int(restarted.group(1)) if exited and restarted else 0

    new_redis_pid = wait_for(lambda: announced("redis"), timeout=60, interval=0.2, what="redis restarted")
    new_worker_pid = wait_for(lambda: announced("worker-revocation"), timeout=60, interval=0.2,
                              what="worker-revocation restarted")
    assert new_redis_pid != redis_pid and new_worker_pid != worker.pid
    assert service.child("worker", "--lane", "revocation").pid == new_worker_pid
    # Same port, same password, same AOF: the URL every child holds still works and the data survived.
    revived = redis.Redis.from_url(url, decode_responses=True)
    assert int(revived.info("server")["process_id"]) == new_redis_pid
    assert revived.get("test:written-before-the-crash") == "kept"

    _leaver_is_revoked(service, wait_for, admin_clients, skip=1)


def test_ctrl_c_stops_every_process_it_started_and_removes_run_env(service):
    assert service.stop() == 0, service.output()[-3000:]
    assert service.started, "there were child processes to stop"
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in service.started):
        assert time.monotonic() < deadline, [p.cmdline() for p in service.started if p.is_running()]
        time.sleep(0.1)
    assert not (service.cwd / "var" / "run.env").exists()


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

