"""The real stack for end-to-end tests: the sandbox over HTTPS, a private redis-server, Celery workers and the
webhook as separate processes started with `python -m ops ...` (exactly what `idsync run` and compose start).

Tests act on the tenant the way an Entra admin would (msal + Graph over HTTPS) and observe Salesforce the way a
Salesforce admin would (simple-salesforce), never through the product's own clients.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib

from ops.embedded_redis import EmbeddedRedis, free_port
from sandbox.admin_clients import GraphAdmin as TenantAdmin
from sandbox.admin_clients import OrgAdmin
from sandbox.server import SandboxServer
from shared.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]

#: Small timings so retries, parking and visibility-timeout restores happen within a test.
FAST = {
    "IDSYNC_MAX_RETRIES": "2",
    "IDSYNC_BACKOFF_BASE_S": "0.2",
    "IDSYNC_BACKOFF_MAX_S": "1",
    "IDSYNC_PARK_THRESHOLD_S": "5",
    "IDSYNC_TASK_TIME_LIMIT_S": "20",
    "IDSYNC_VISIBILITY_TIMEOUT_S": "30",
    "IDSYNC_LOG_JSON": "true",
    "IDSYNC_LOG_LEVEL": "INFO",
    "IDSYNC_WEBHOOK_CLIENT_STATE": "integration-client-state",
    # No /metrics servers unless a test asks for one on a free port: fixed ports would collide between tests.
    "IDSYNC_METRICS_PORT_WORKER_REVOCATION": "0",
    "IDSYNC_METRICS_PORT_WORKER_SYNC": "0",
    "IDSYNC_METRICS_PORT_BEAT": "0",
    "IDSYNC_METRICS_PORT_POLLER": "0",
    "IDSYNC_METRICS_PORT_AUDIT_WRITER": "0",
}


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until `predicate()` is truthy; fail the test with `what` otherwise. Never asserts durations."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


class Stack:
    """One test's running parts; everything it starts is stopped at teardown."""

    def __init__(self, sandbox: SandboxServer, redis_server: EmbeddedRedis, tmp: Path) -> None:
        self.sandbox = sandbox
        self.redis_server = redis_server
        self.tmp = tmp
        self.env: dict[str, str] = {**sandbox.env(), **FAST, "IDSYNC_REDIS_URL": redis_server.url,
                                    "IDSYNC_VAR_DIR": str(tmp / "var")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.redis = redis_lib.Redis.from_url(redis_server.url, decode_responses=True)
        self._tenant: TenantAdmin | None = None
        self._org: OrgAdmin | None = None

    # --- settings and product objects, for arranging and asserting
    def settings(self, **overrides: Any) -> Settings:
        values = {k.removeprefix("IDSYNC_").lower(): v for k, v in self.env.items()}
        values.update(overrides)
        return load_settings(_env_file=None, **values)

    def celery(self) -> Any:
        from workers.app import create_app

        return create_app(self.settings(), polling_interval_s=0.1)

    @property
    def tenant(self) -> TenantAdmin:
        self._tenant = self._tenant or TenantAdmin(self.env)
        return self._tenant

    @property
    def org(self) -> OrgAdmin:
        self._org = self._org or OrgAdmin(self.env)
        return self._org

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        with httpx.Client(verify=ssl.create_default_context(cafile=self.env["IDSYNC_CA_BUNDLE"]),
                          trust_env=False) as c:
            r = c.request(method, f"{self.env['IDSYNC_SANDBOX_ADMIN_URL']}{path}", json=json,
                          headers={"Authorization": f"Bearer {self.env['IDSYNC_SANDBOX_ADMIN_TOKEN']}"})
            r.raise_for_status()
            return r.json()

    # --- processes
    def start(self, name: str, *args: str, ready: Callable[[], Any] | None = None, **env: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops", *args], cwd=self.tmp, env={**os.environ, **self.env, **env},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs[name] = proc
        if ready is not None:
            wait_for(lambda: ready() or _check_alive(proc, name, self.tmp), timeout=30, what=f"{name} ready")
        return proc

    def start_worker(self, lane: str, concurrency: int = 1, name: str | None = None) -> subprocess.Popen:
        name = name or f"worker-{lane}"
        proc = self.start(name, "worker", "--lane", lane, "--concurrency", str(concurrency),
                          ready=lambda: b"ready." in self.log(name))
        return proc

    def start_webhook(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.env["IDSYNC_WEBHOOK_PORT"] = str(port)
        self.env["IDSYNC_WEBHOOK_PUBLIC_URL"] = url
        # Never the default 9108: tests (and other checkouts) run side by side on one machine.
        self.env["IDSYNC_WEBHOOK_METRICS_PORT"] = str(free_port())

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self.start("webhook", "webhook", ready=ready)
        return url

    def log(self, name: str) -> bytes:
        path = self.tmp / f"{name}.log"
        return path.read_bytes() if path.exists() else b""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=5)
        self.procs.clear()

    # --- observations
    def audit(self, action: str | None = None, entra_id: str | None = None) -> list[dict[str, Any]]:
        from shared import audit

        return [r for r in audit.recent(self.redis, 10_000)
                if (action is None or r["action"] == action) and (entra_id is None or r["entra_id"] == entra_id)]

    def active_member_in_salesforce(self, skip: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        """An enabled Entra member whose Salesforce user is active and not a deactivation blocker."""
        state = self.sandbox.state
        with state.lock:
            users = [dict(u) for u in state.directory.users.values()
                     if u.get("accountEnabled") and u.get("userType") == "Member"]
        found = 0
        for user in users:
            sf_user = self.org.user(user["userPrincipalName"])
            blocked = sf_user is not None and sf_user["Id"] in state.org.deactivation_blockers
            if sf_user and sf_user["IsActive"] and not blocked and not self.org.frozen(sf_user["Id"]):
                if found == skip:
                    return user, sf_user
                found += 1
        pytest.fail("no active Entra member with an active Salesforce user left in the sandbox")


def _check_alive(proc: subprocess.Popen, name: str, tmp: Path) -> bool:
    if proc.poll() is not None:
        log = (tmp / f"{name}.log").read_text(errors="replace")[-3000:]
        pytest.fail(f"{name} exited with {proc.returncode}:\n{log}")
    return False


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=60, groups=6, seed=23, overlap=1.0)
    server.state.config.patch({"graph": {"notification_retry_base_s": 0.5}})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stack(sandbox: SandboxServer, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(sandbox, redis_server, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()  # the sandbox's clock, faults and subscriptions are reset before the next test (tests/conftest.py)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def admin_clients() -> tuple[type[TenantAdmin], type[OrgAdmin]]:
    """The Entra-admin and Salesforce-admin client classes, for tests that build their own environment."""
    return TenantAdmin, OrgAdmin
