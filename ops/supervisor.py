"""`idsync run`: one supervised process tree for a laptop or a single VM.

Each component runs as its own child process (the same commands docker compose runs as separate containers), so
what runs under `make run` is what runs in production, just packed onto one machine. The supervisor restarts any
component that dies -- the embedded Redis (same port, AOF directory and password) and the sandbox (same port and
state directory) included -- with a growing delay (`ops/restarts.py`), and says so, one line per event. On Ctrl-C
it stops them in reverse order: producers first (nothing new is accepted), then workers (they finish or requeue
their current message), then the sandbox and Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.embedded_redis import EmbeddedRedis
from ops.ports import choose_port
from ops.restarts import RestartBackoff
from ops.runenv import redacted_url, write_env_file
from shared.settings import Settings
from shared.settings_sources import read_env_values

#: Stop order: producers first, then workers, then what everything else depends on.
# The audit writer after the workers: it chains and delivers what they audited while stopping.
STOP_ORDER = ("poller", "request-poller", "webhook", "beat", "flower", "worker-sync", "worker-revocation",
              "audit-writer", "sandbox", "redis")
#: Entra groups the sandbox seeds for `make run`: every group the demo mapping names (examples/mapping.yaml:
#: Marketing is the ninth seeded group; Distributors, which invited guests join, the fourteenth)
SANDBOX_GROUPS = 14
SANDBOX_RESTART_NOTE = "; the sandbox reseeds on start: its users, groups, Salesforce data and subscriptions are new"


@dataclass
class Supervised:
    """One component the supervisor keeps running: how to start it, and its restart bookkeeping."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 20.0
    #: said after "<name> restarted (pid N)", when a restart is not transparent to the operator
    restart_note: str = ""
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: when it died and waits for its restart: the (monotonic) time of the restart
    restart_at: float | None = None


def describe_exit(code: int) -> str:
    """`1`, or `-9 (SIGKILL)` for a process killed by a signal (Popen's negative return codes)."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


class Supervisor:
    def __init__(self, settings: Settings, *, var_dir: Path | None = None,
                 echo: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.var_dir = Path(var_dir or settings.var_dir)
        self.echo = echo
        self.clock = clock
        self.redis: EmbeddedRedis | None = None
        self.components: list[Supervised] = []
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
            redis = self.redis = EmbeddedRedis(self.var_dir / "redis")
            self._adopt(Supervised("redis", lambda: _start_redis(redis), stop_timeout_s=10.0))
            env["IDSYNC_REDIS_URL"] = redis.url
            self.urls["redis"] = f"{redacted_url(redis.url)} (embedded, AOF under {self.var_dir / 'redis'})"
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
        if self.settings.webhook_metrics_port:  # 0 = off stays off
            metrics_port, replaced = choose_port(self.settings.webhook_metrics_port, host)
            if replaced:
                self.echo(f"port {self.settings.webhook_metrics_port} is taken: webhook metrics on {metrics_port}")
            env["IDSYNC_WEBHOOK_METRICS_PORT"] = str(metrics_port)
        if not self.settings.webhook_public_url:
            env["IDSYNC_WEBHOOK_PUBLIC_URL"] = f"http://{host}:{webhook_port}"
        self.urls["webhook"] = f"http://{host}:{webhook_port}/graph/notifications"
        env.update(self._metrics_ports(env.get("IDSYNC_WEBHOOK_METRICS_PORT"), host))
        self.urls["flower"] = f"http://127.0.0.1:{flower_port}/"
        run_env = dict(env)
        run_env["IDSYNC_VAR_DIR"] = str(self.var_dir)
        # Listening URLs, for people and scripts (settings ignore these names).
        run_env["IDSYNC_RUN_WEBHOOK_URL"] = self.urls["webhook"]
        run_env["IDSYNC_RUN_FLOWER_URL"] = self.urls["flower"]
        if "sandbox" in self.urls:
            run_env["IDSYNC_RUN_SANDBOX_URL"] = self.urls["sandbox"].split(" ")[0]
        write_env_file(self.var_dir / "run.env", run_env)  # 0600: IDSYNC_REDIS_URL carries the password
        # The sandbox's credentials go to the children's environment, not into run.env (settings read sandbox.env).
        self.env = {**os.environ, **sandbox_env, **run_env}
        for name, args in (
            ("worker-revocation", ("worker", "--lane", "revocation")),
            ("worker-sync", ("worker", "--lane", "sync")),
            ("webhook", ("webhook",)),
            ("beat", ("beat",)),
            ("poller", ("poll",)),
            ("flower", ("flower",)),
            ("audit-writer", ("audit-writer",)),
        ):
            self._adopt(Supervised(name, self._idsync_launcher(*args)))
        if self._requests_enabled():
            self._adopt(Supervised("request-poller", self._idsync_launcher("request-poller")))
        self._print_urls()

    def _requests_enabled(self) -> bool:
        """The request poller runs only when the mapping turns the reverse flow on; a mapping that does not load
        is said once here (the workers report its problems in detail) and the poller stays off."""
        from shared.mapping import MappingError, load_mapping
        from shared.provisioning.mapping_store import EXAMPLE_MAPPING, mapping_path

        path = mapping_path(self.settings)
        if path is None and "sandbox" in self.urls and EXAMPLE_MAPPING.exists():
            # the settings were read before the sandbox started, so they do not know it is one: the children
            # (which read var/sandbox.env) map with the demo mapping, and so does this check
            path = EXAMPLE_MAPPING
        if path is None:
            return False
        try:
            spec = load_mapping(path).requests
        except MappingError as err:
            self.echo(f"request poller off: the mapping does not load ({str(err)[:200]})")
            return False
        if spec is None or not spec.enabled:
            return False
        self.urls["requests"] = f"polling Salesforce every {spec.poll_interval_s:g} s for approved requests"
        return True

    def _adopt(self, component: Supervised) -> None:
        """Start a component for the first time and put it under supervision."""
        component.proc = component.launch()
        component.started_at = self.clock()
        self.components.append(component)

    def _idsync_launcher(self, *args: str) -> Callable[[], subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "ops", *args]
        return lambda: subprocess.Popen(argv, env=self.env, start_new_session=True)

    def _metrics_ports(self, webhook_port: str | None = None, webhook_host: str | None = None) -> dict[str, str]:
        """Each component's /metrics port (a taken one is replaced and said), as settings for the children; the
        start-up lines name them all, the webhook's (chosen with its listener) included."""
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
        if webhook_port:  # the webhook serves its metrics on its own host, which may differ
            where = "" if webhook_host in (None, host) else webhook_host
            shown.append(f"webhook {where}:{webhook_port}")
        if shown:
            self.urls["metrics"] = f"http://{host}:<port>/metrics ({', '.join(shown)})"
        return env

    def _start_sandbox(self) -> dict[str, str]:
        """Start the sandbox child and return the settings it wrote to var/sandbox.env."""
        env_file = self.var_dir / "sandbox.env"
        env_file.unlink(missing_ok=True)
        port, replaced = choose_port(8443)
        if replaced:
            self.echo(f"port 8443 is taken: the sandbox listens on {port} instead")
        # Same port and state dir on every restart: the CA and credentials live there, so the children's settings
        # stay valid when the sandbox comes back.
        argv = [
            sys.executable, "-m", "sandbox",
            "--state-dir", str(self.var_dir / "sandbox"),
            "--env-file", str(env_file),
            "--port", str(port),
            "--groups", str(SANDBOX_GROUPS),
        ]
        self.echo("no tenant configured (IDSYNC_GRAPH_* / IDSYNC_SF_*): starting the sandbox")
        sandbox = Supervised("sandbox", lambda: subprocess.Popen(argv, start_new_session=True),
                             stop_signal=signal.SIGINT, stop_timeout_s=10.0, restart_note=SANDBOX_RESTART_NOTE)
        self._adopt(sandbox)
        proc = sandbox.proc
        assert proc is not None
        deadline = time.monotonic() + 120
        while not env_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the sandbox exited with code {describe_exit(proc.returncode)}")
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not write its env file within 120 s")
            time.sleep(0.1)
        values = read_env_values(env_file)
        self.urls["sandbox"] = f"{values['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/ (env: {env_file})"
        return values

    def _print_urls(self) -> None:
        self.echo("idsync is running:")
        for name, url in self.urls.items():
            self.echo(f"  {name:8} {url}")
        self.echo(f"  status   idsync status   (reads {self.var_dir / 'run.env'})")
        self.echo("Ctrl-C stops everything.")

    # ------------------------------------------------------------------ supervision
    def watch_once(self) -> None:
        """Notice deaths and schedule restarts; start what is due. One line of output per event."""
        for component in self.components:
            if self._stopping:
                return
            now = self.clock()
            if component.restart_at is None:
                code = component.proc.poll() if component.proc is not None else None
                if code is None:
                    continue
                self._schedule_restart(component, f"exited with code {describe_exit(code)}", now)
            elif now >= component.restart_at:
                component.restart_at = None
                try:
                    component.proc = component.launch()
                except Exception as err:  # noqa: BLE001 - e.g. Redis refusing to start: try again later
                    self._schedule_restart(component, f"did not start ({str(err)[:200]})", now)
                    continue
                component.started_at = self.clock()
                self.echo(f"{component.name} restarted (pid {component.proc.pid}){component.restart_note}")

    def _schedule_restart(self, component: Supervised, what: str, now: float) -> None:
        delay = component.backoff.delay_after(now - component.started_at)
        component.restart_at = now + delay
        self.echo(f"{component.name} {what}; restarting in {delay:.1f}s")

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
        self._stopping = True
        by_name = {c.name: c for c in self.components}
        ordered = [by_name[n] for n in STOP_ORDER if n in by_name]
        ordered += [c for c in self.components if c.name not in STOP_ORDER]
        # Producers and workers at once (they shut down in parallel), then the audit writer (it chains and delivers
        # what the workers audited while stopping), then the sandbox and Redis, in that order.
        last = ("audit-writer", "sandbox", "redis")
        tiers = [[c for c in ordered if c.name not in last],
                 [c for c in ordered if c.name == "audit-writer"],
                 [c for c in ordered if c.name == "sandbox"],
                 [c for c in ordered if c.name == "redis"]]
        for tier in tiers:
            for component in tier:
                if component.proc is not None and component.proc.poll() is None:
                    component.proc.send_signal(component.stop_signal)
            for component in tier:
                if component.proc is not None:
                    _wait_or_kill(component.proc, component.stop_timeout_s)
        (self.var_dir / "run.env").unlink(missing_ok=True)


def _start_redis(redis: EmbeddedRedis) -> subprocess.Popen[bytes]:
    """(Re)start the embedded Redis and wait until it answers: same port, AOF directory and password every time."""
    redis.start()
    assert redis.proc is not None
    return redis.proc


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
