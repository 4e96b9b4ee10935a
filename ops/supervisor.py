"""`idsync run`: one supervised process tree for a laptop or a single VM.

Each component runs as its own child process (the same commands docker compose runs as separate containers), so
what runs under `make run` is what runs in production, just packed onto one machine. The supervisor restarts a
child that dies, with a growing delay, and on Ctrl-C stops them in reverse order: producers first (nothing new is
accepted), then workers (they finish or requeue their current message), then the sandbox and Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.embedded_redis import EmbeddedRedis
from ops.ports import choose_port
from ops.runenv import read_env_file, write_env_file
from shared.settings import Settings


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


class Supervisor:
    def __init__(self, settings: Settings, *, var_dir: Path | None = None, echo=print) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.var_dir = Path(var_dir or settings.var_dir)
        self.echo = echo
        self.redis: EmbeddedRedis | None = None
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self._stopping = False

    # ------------------------------------------------------------------ start-up
    def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        (self.var_dir / "run.env").unlink(missing_ok=True)
        env: dict[str, str] = {}
        sandbox_env: dict[str, str] = {}
        if self.settings.redis_url:
            env["IDSYNC_REDIS_URL"] = self.settings.redis_url
        else:
            self.redis = EmbeddedRedis(self.var_dir / "redis").start()
            env["IDSYNC_REDIS_URL"] = self.redis.url
            self.urls["redis"] = f"{self.redis.url} (embedded, AOF under {self.var_dir / 'redis'})"
        if not self.settings.tenant_configured:
            sandbox_env = self._start_sandbox()
        host = self.settings.webhook_host
        webhook_port, replaced = choose_port(self.settings.webhook_port, host)
        if replaced:
            self.echo(f"port {self.settings.webhook_port} is taken: webhook listens on {webhook_port} instead")
        flower_port, replaced = choose_port(self.settings.flower_port)
        if replaced:
            self.echo(f"port {self.settings.flower_port} is taken: Flower listens on {flower_port} instead")
        env["IDSYNC_WEBHOOK_PORT"] = str(webhook_port)
        env["IDSYNC_FLOWER_PORT"] = str(flower_port)
        if not self.settings.webhook_public_url:
            env["IDSYNC_WEBHOOK_PUBLIC_URL"] = f"http://{host}:{webhook_port}"
        self.urls["webhook"] = f"http://{host}:{webhook_port}/graph/notifications"
        env.update(self._metrics_ports())
        self.urls["flower"] = f"http://127.0.0.1:{flower_port}/"
        run_env = dict(env)
        run_env["IDSYNC_VAR_DIR"] = str(self.var_dir)
        # Listening URLs, for people and scripts (settings ignore these names).
        run_env["IDSYNC_RUN_WEBHOOK_URL"] = self.urls["webhook"]
        run_env["IDSYNC_RUN_FLOWER_URL"] = self.urls["flower"]
        if "sandbox" in self.urls:
            run_env["IDSYNC_RUN_SANDBOX_URL"] = self.urls["sandbox"].split(" ")[0]
        write_env_file(self.var_dir / "run.env", run_env)
        # The sandbox's credentials go to the children's environment, not into run.env (settings read sandbox.env).
        self.env = {**os.environ, **sandbox_env, **run_env}
        self.children = [
            Child("worker-revocation", self._idsync("worker", "--lane", "revocation")),
            Child("worker-sync", self._idsync("worker", "--lane", "sync")),
            Child("webhook", self._idsync("webhook")),
            Child("beat", self._idsync("beat")),
            Child("poller", self._idsync("poll")),
            Child("flower", self._idsync("flower")),
            Child("audit-writer", self._idsync("audit-writer")),
        ]
        for child in self.children:
            self._spawn(child)
        self._print_urls()

    def _metrics_ports(self) -> dict[str, str]:
        """Each component's /metrics port (a taken one is replaced and said), as settings for the children."""
        env: dict[str, str] = {}
        host = self.settings.metrics_host
        for component in ("worker_revocation", "worker_sync", "beat", "poller", "audit_writer"):
            wanted = int(getattr(self.settings, f"metrics_port_{component}"))
            if not wanted:
                continue
            port, replaced = choose_port(wanted, host)
            if replaced:
                self.echo(f"port {wanted} is taken: {component.replace('_', '-')} metrics on {port} instead")
            env[f"IDSYNC_METRICS_PORT_{component.upper()}"] = str(port)
        shown = [f"{name.removeprefix('IDSYNC_METRICS_PORT_').lower().replace('_', '-')} :{port}"
                 for name, port in env.items()]
        if shown:
            self.urls["metrics"] = f"http://{host}:<port>/metrics ({', '.join(shown)})"
        return env

    def _idsync(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ops", *args]

    def _start_sandbox(self) -> dict[str, str]:
        """Start the sandbox child and return the settings it wrote to var/sandbox.env."""
        env_file = self.var_dir / "sandbox.env"
        env_file.unlink(missing_ok=True)
        port, replaced = choose_port(8443)
        if replaced:
            self.echo(f"port 8443 is taken: the sandbox listens on {port} instead")
        argv = [
            sys.executable, "-m", "sandbox",
            "--state-dir", str(self.var_dir / "sandbox"),
            "--env-file", str(env_file),
            "--port", str(port),
        ]
        self.echo("no tenant configured (IDSYNC_GRAPH_* / IDSYNC_SF_*): starting the sandbox")
        self.sandbox = subprocess.Popen(argv, start_new_session=True)
        deadline = time.monotonic() + 120
        while not env_file.exists():
            if self.sandbox.poll() is not None:
                raise RuntimeError(f"the sandbox exited with code {self.sandbox.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not write its env file within 120 s")
            time.sleep(0.1)
        values = read_env_file(env_file)
        self.urls["sandbox"] = f"{values['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/ (env: {env_file})"
        return values

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=self.env, start_new_session=True)
        child.started_at = time.monotonic()

    def _print_urls(self) -> None:
        self.echo("idsync is running:")
        for name, url in self.urls.items():
            self.echo(f"  {name:8} {url}")
        self.echo(f"  status   idsync status   (reads {self.var_dir / 'run.env'})")
        self.echo("Ctrl-C stops everything.")

    # ------------------------------------------------------------------ supervision
    def watch_once(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                if now - child.started_at > 60:
                    child.restarts = 0
                    delay = 0.5
                child.next_start = now + delay
                self.echo(f"{child.name} exited with code {child.proc.returncode}; restarting in {delay:.1f}s")
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                self._spawn(child)
        if self.sandbox is not None and self.sandbox.poll() is not None:
            raise RuntimeError(f"the sandbox exited with code {self.sandbox.returncode}")

    def run(self) -> int:
        def _stop(signum: int, frame: object) -> None:
            self._stopping = True

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not self._stopping:
                self.watch_once()
                time.sleep(0.25)
            return 0
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        # The audit writer last: it chains and delivers what the workers audited while they stopped.
        order = ["poller", "webhook", "beat", "flower", "worker-sync", "worker-revocation", "audit-writer"]
        by_name = {c.name: c for c in self.children}
        for name in order:
            child = by_name.get(name)
            if child and child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for name in order:
            child = by_name.get(name)
            if child and child.proc:
                _wait_or_kill(child.proc, 20)
        if self.sandbox is not None:
            if self.sandbox.poll() is None:
                self.sandbox.send_signal(signal.SIGINT)
            _wait_or_kill(self.sandbox, 10)
        if self.redis is not None:
            self.redis.stop()
        (self.var_dir / "run.env").unlink(missing_ok=True)


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
