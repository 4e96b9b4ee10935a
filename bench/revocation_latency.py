"""Revocation latency through the real pipeline, with and without a deep sync backlog.

Why: the product promise is that a leaver loses Salesforce access within seconds, and the design keeps a separate
revocation lane precisely so that a sync backlog cannot delay a leaver. This measures both claims end to end on the
real processes: sandbox Graph -> change notification -> webhook (`python -m ops webhook`) -> Redis -> revocation
worker (`python -m ops worker --lane revocation`) -> sandbox Salesforce. Goal: p99 <= 1 s (notification received ->
Salesforce user deactivated) under a 10,000-message sync backlog on a 2-core machine. It prints figures and asserts
nothing: timings on a shared machine are not test material.

    .venv/bin/python bench/revocation_latency.py [--users 50] [--backlog 10000] [--revocation-workers 1]
                                                 [--sync-workers 1] [--interval-ms 100] [--keep]
                                                 [--sandbox-tcp-nodelay] [--set IDSYNC_NAME=VALUE ...]
                                                 [--audit both|off|on] [--audit-sinks jsonl,postgres]
                                                 [--audit-postgres-url URL]

Results and their reading are in docs/BENCHMARKS.md ("Revocation latency").

Scenario A disables `--users` Entra users through Graph, one every `--interval-ms`, with the sync lane idle.
Scenario B first publishes `--backlog` `sync.user_changed` messages (for other users) through the product's own
`shared.dispatch.publish`, lets the sync worker start draining them, then repeats the disables; the sync lane depth
is printed before and after to show the backlog was there for the whole measurement.

Audit (`--audit both`, the default): scenarios A and B run first without the audit writer (workers only append to
the Redis inbox, as before the audit issue), then again on fresh users with `python -m ops audit-writer` running
(chaining, signing checkpoints and delivering to `--audit-sinks`), after it has caught up. The last lines print both
p99s and the ratio on/off: the cost of auditing for a leaver.

The headline figure per user is the audit `revoke` record's `ts - detail.observed_at` (webhook received the
notification -> deactivation done). As cross-checks it also reports Graph PATCH -> `IsActive = false` (read from the
sandbox org in-process every few ms, so polling costs the pipeline nothing over HTTP) and a per-stage breakdown joined
by correlation id: PATCH -> received (sandbox notifier), received -> enqueued (webhook log), enqueued -> task start
(worker log: finish time - duration), start -> freeze audit (Graph GET + Salesforce lookups + freeze PATCH),
freeze -> deactivate audit (deactivate PATCH). The cost of single Graph/Salesforce calls is timed separately with the
product's clients so "start -> freeze" can be attributed.

The mass-deprovisioning guard's count limit is raised out of reach (its check still runs for every revocation).
Deliberately kept at product defaults: the fleet rate limiter (`IDSYNC_GRAPH_REQUESTS_PER_S`,
`IDSYNC_SF_REQUESTS_PER_S`, revocation reserve) and the Celery settings, because they are part of what a leaver
waits for. Only the sandbox's budgets (Graph resource units, Salesforce daily allowance) are raised, so sandbox
throttling does not dominate. The script does not import from tests/; the process handling mirrors
tests/integration/conftest.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from ops.runenv import redacted_url  # noqa: E402
from sandbox.admin_clients import GraphAdmin  # noqa: E402
from sandbox.server import SandboxServer  # noqa: E402
from shared.audit import STREAM_KEY  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402

GOAL_P99_MS = 1000.0
CLIENT_STATE = "bench-revocation-latency-state"
#: Warm-up disables before scenario A: the first task of each worker pays for its MSAL and Salesforce OAuth tokens
#: and connection set-up, which a long-running fleet pays once a day, not per leaver.
WARMUP_USERS = 3
#: How long to wait for the last revocation of a scenario before reporting what arrived.
SCENARIO_TIMEOUT_S = 180.0


# ------------------------------------------------------------------------------------------------------- helpers


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so p99 of 50 samples is not simply the max."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": statistics.fmean(values) if values else math.nan,
    }


def fmt_row(label: str, values: list[float], width: int = 44) -> str:
    s = summary(values)
    return (f"  {label:<{width}} n={s['n']:>3}  p50 {s['p50']:7.0f}  p95 {s['p95']:7.0f}  p99 {s['p99']:7.0f}  "
            f"max {s['max']:7.0f}  ms")


def parse_ts(text: str) -> float:
    """structlog's ISO UTC timestamp (`...T09:05:00.123456Z`) as epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------------ processes


AUDIT_MODES: dict[str, list[bool]] = {"off": [False], "on": [True], "both": [False, True],
                                     "abba": [False, True, True, False]}


class Processes:
    """The webhook and worker subprocesses (`python -m ops ...`), each in its own process group so that stopping it
    also stops Celery's pool children. Logs go to files the breakdown is parsed from."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], ready: Callable[[], bool], timeout: float = 60.0) -> None:
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - owned by the child, closed when it exits
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops", *args], cwd=self.workdir,
            env={**os.environ, **self.env, "PYTHONPATH": pythonpath},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.procs[name] = proc

        def up() -> bool:
            if proc.poll() is not None:
                tail = self.log(name)[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            return ready()

        wait_until(up, timeout, f"{name} ready", interval=0.1)

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def json_lines(self, name: str) -> Iterable[dict[str, Any]]:
        for line in self.log(name).splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            self.procs.pop(name, None)


# ---------------------------------------------------------------------------------------------- tenant and org


@dataclass(frozen=True)
class Target:
    entra_id: str
    upn: str
    sf_id: str


def revocable_members(server: SandboxServer) -> tuple[list[Target], list[str]]:
    """(enabled members whose Salesforce user is active, unfrozen and deactivatable; ids of all other members).

    Read from the sandbox in-process: choosing targets is set-up, not part of what is measured."""
    state = server.state
    org = state.org
    with state.lock:
        members = [(u["id"], u["userPrincipalName"]) for u in state.directory.users.values()
                   if u.get("accountEnabled") and u.get("userType") == "Member"]
    by_username = {str(r.get("Username", "")).lower(): r for r in org.records("User")}
    frozen = {r.get("UserId") for r in org.records("UserLogin") if r.get("IsFrozen")}
    targets, others = [], []
    for entra_id, upn in members:
        rec = by_username.get(str(upn).lower())
        ok = (rec is not None and rec.get("IsActive") is True and rec["Id"] not in org.deactivation_blockers
              and rec["Id"] not in frozen)
        if ok:
            assert rec is not None
            targets.append(Target(entra_id, upn, rec["Id"]))
        else:
            others.append(entra_id)
    return targets, others


class InactivePoller:
    """Cross-check independent of the product's own audit: when did each Salesforce user become inactive?

    Reads the sandbox org in-process every `interval` s; an HTTP SOQL poll would compete with the pipeline for the
    sandbox's single event loop and so distort the very thing measured."""

    def __init__(self, server: SandboxServer, sf_ids: Iterable[str], interval: float = 0.005) -> None:
        self.org = server.state.org
        self.pending = set(sf_ids)
        self.seen: dict[str, float] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inactive-poller", daemon=True)

    def start(self) -> InactivePoller:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and self.pending:
            now = time.time()
            with self.org.lock:
                done = [i for i in self.pending
                        if (rec := self.org.get_live(i)) is not None and rec[1].get("IsActive") is False]
            for sf_id in done:
                self.seen[sf_id] = now
                self.pending.discard(sf_id)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------------ the bench


@dataclass
class ScenarioResult:
    name: str
    total_ms: list[float] = field(default_factory=list)  # audit: revoke ts - observed_at
    patch_to_inactive_ms: list[float] = field(default_factory=list)  # PATCH sent -> IsActive false (polled)
    stages: dict[str, list[float]] = field(default_factory=dict)
    service_ms: list[float] = field(default_factory=list)  # worker log duration_ms of the revocation task
    pickup_ms: list[float] = field(default_factory=list)  # start - max(enqueued, previous task's finish)
    missing: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    sync_depth_before: int | None = None
    sync_depth_after: int | None = None
    sync_drain_per_s: float | None = None
    window_s: float = 0.0
    offered_per_s: float = 0.0


STAGES = (
    "PATCH -> notification received (sandbox notifier)",
    "received -> enqueued (webhook)",
    "enqueued -> task started (queue wait + pickup)",
    "task started -> frozen (Graph GET, SF lookups, freeze)",
    "frozen -> deactivated (deactivate PATCH)",
    "deactivated -> revoke record",
)


class _TcpSocketModule:
    """Stands in for the `socket` module inside sandbox.server so its listening socket is created with
    proto=IPPROTO_TCP. Why: SandboxServer.start() creates it with proto 0, and asyncio only sets TCP_NODELAY on
    accepted sockets whose proto is IPPROTO_TCP, so every sandbox response whose headers and body are written
    separately (every GET) waits ~40 ms for the client's delayed ACK (Nagle). Opt-in (`--sandbox-tcp-nodelay`)
    because it changes the stand-in, not the product; see docs/BENCHMARKS.md."""

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    def socket(self, family: int, type_: int) -> socket.socket:
        return socket.socket(family, type_, socket.IPPROTO_TCP)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        if args.sandbox_tcp_nodelay:
            import sandbox.server

            sandbox.server.socket = _TcpSocketModule()  # type: ignore[assignment]
        self.workdir = workdir
        # enough revocable members (not every seeded user is one) for every round: warm-up + 2 scenarios per mode
        rounds = len(AUDIT_MODES[args.audit])
        n_users = max(1000, 2 * (WARMUP_USERS + 2 * args.users * rounds))
        self.server = SandboxServer(workdir / "sandbox", users=n_users, groups=4, seed=11, overlap=1.0)
        self.redis_server = EmbeddedRedis(workdir / "redis")
        self.procs: Processes | None = None
        self.redis: redis_lib.Redis | None = None
        self.env: dict[str, str] = {}

    # --- set-up

    def start(self) -> None:
        started = time.perf_counter()
        self.server.start(timeout=300)
        # Sandbox budgets up, so its (faithful) throttling does not dominate; notifications keep their defaults
        # (50 ms batching window), since that is part of what Graph really does.
        self.server.state.config.patch({
            "graph": {"ru_per_10s": 10_000_000, "write_per_150s": 10_000_000},
            "salesforce": {"daily_api_limit": 100_000_000},
        })
        self.redis_server.start()
        self.redis = redis_lib.Redis.from_url(self.redis_server.url, decode_responses=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.env = {
            **self.server.env(),
            "IDSYNC_REDIS_URL": self.redis_server.url,
            "IDSYNC_WEBHOOK_PORT": str(port),
            "IDSYNC_WEBHOOK_PUBLIC_URL": url,
            "IDSYNC_WEBHOOK_CLIENT_STATE": CLIENT_STATE,
            "IDSYNC_VAR_DIR": str(self.workdir / "var"),
            "IDSYNC_LOG_JSON": "true",
            "IDSYNC_LOG_LEVEL": "INFO",
            # Hundreds of disables within minutes ARE a mass deprovisioning: the guard would rightly hold them after
            # its threshold. The limit is raised out of reach, not switched off, so every revocation still pays for
            # the guard's check (one Redis script call) exactly as a production leaver does.
            "IDSYNC_GUARD_MAX_COUNT": "1000000",
            "IDSYNC_GUARD_MAX_SHARE": "0",
        }
        for item in self.args.set:
            name, sep, value = item.partition("=")
            if not sep or not name.startswith("IDSYNC_"):
                raise SystemExit(f"--set expects IDSYNC_NAME=VALUE, got {item!r}")
            self.env[name] = value
        procs = self.procs = Processes(self.workdir, self.env)

        def logged_ready(name: str) -> Callable[[], bool]:
            return lambda: "ready." in procs.log(name)

        for lane, concurrency in (("revocation", self.args.revocation_workers), ("sync", self.args.sync_workers)):
            name = f"worker-{lane}"
            procs.start(name, ["worker", "--lane", lane, "--concurrency", str(concurrency)], ready=logged_ready(name))

        def webhook_ready() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        procs.start("webhook", ["webhook"], ready=webhook_ready)
        from producers.subscriptions import SubscriptionManager
        from shared.graph_client import GraphClient

        settings = self.settings()
        subs = SubscriptionManager(GraphClient(settings), self.redis, settings).ensure()
        print(f"stack up in {time.perf_counter() - started:.1f} s: sandbox {len(self.server.state.directory.users)} "
              f"Entra users, redis {redacted_url(self.redis_server.url)}, webhook {url}, subscriptions "
              f"{sorted(s['resource'] for s in subs)}, revocation concurrency {self.args.revocation_workers}, "
              f"sync concurrency {self.args.sync_workers}")

    def settings(self) -> Settings:
        values = {k.removeprefix("IDSYNC_").lower(): v for k, v in self.env.items()}
        return load_settings(_env_file=None, **values)

    def stop(self) -> None:
        if self.procs is not None:
            self.procs.stop_all()
        self.redis_server.stop()
        self.server.stop()

    # --- observations

    def audit_since(self, start_id: str) -> list[dict[str, Any]]:
        assert self.redis is not None
        out = []
        for stream_id, raw_fields in self.redis.xrange(STREAM_KEY, min=start_id) or []:
            fields = {str(key): str(value) for key, value in (raw_fields or {}).items()}
            rec: dict[str, Any] = {"id": str(stream_id), **fields}
            rec["ts"] = float(fields.get("ts", 0.0))
            rec["detail"] = json.loads(fields.get("detail") or "{}")
            out.append(rec)
        return out

    def sync_depth(self) -> int:
        assert self.redis is not None
        return int(self.redis.llen("sync"))

    # --- one scenario

    def disable_all(self, tenant: GraphAdmin, targets: list[Target], name: str,
                    depth_probe: bool = False) -> ScenarioResult:
        assert self.redis is not None and self.procs is not None
        result = ScenarioResult(name)
        start_id = f"{int(time.time() * 1000) - 1}-0"
        activity = self.server.state.activity
        deliveries_before = activity.counters["webhook_delivery"]
        if depth_probe:
            result.sync_depth_before = self.sync_depth()
        poller = InactivePoller(self.server, [t.sf_id for t in targets]).start()
        patched: dict[str, float] = {}
        interval = self.args.interval_ms / 1000.0
        began = time.monotonic()
        for i, target in enumerate(targets):
            patched[target.entra_id] = time.time()
            tenant.disable(target.entra_id)
            delay = began + (i + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        wanted = {t.entra_id for t in targets}

        def all_revoked() -> bool:
            done = {r["entra_id"] for r in self.audit_since(start_id) if r["action"] == "revoke"}
            return wanted <= done

        try:
            wait_until(all_revoked, SCENARIO_TIMEOUT_S, f"{name}: every revoke record", interval=0.2)
        except TimeoutError as err:
            print(f"  warning: {err}")
        result.window_s = time.monotonic() - began
        result.offered_per_s = 1.0 / interval if interval > 0 else math.inf
        if depth_probe:
            result.sync_depth_after = self.sync_depth()
            drained = (result.sync_depth_before or 0) - result.sync_depth_after
            result.sync_drain_per_s = drained / result.window_s if result.window_s else None
        try:
            wait_until(lambda: not poller.pending, 10, "the poller to see every user inactive")
        except TimeoutError as err:
            print(f"  warning: {err}")
        poller.stop()
        n_deliveries = activity.counters["webhook_delivery"] - deliveries_before
        result.deliveries = activity.recent("webhook_delivery", n_deliveries) if n_deliveries else []
        self._collect(result, targets, patched, poller, start_id)
        return result

    def _collect(self, result: ScenarioResult, targets: list[Target], patched: dict[str, float],
                 poller: InactivePoller, start_id: str) -> None:
        assert self.procs is not None
        records = self.audit_since(start_id)
        by_cid: dict[str, dict[str, dict[str, Any]]] = {}
        for rec in records:
            cid = rec.get("correlation_id") or ""
            by_cid.setdefault(cid, {}).setdefault(rec["action"], rec)  # the first of each action per correlation
        revoke_by_user: dict[str, dict[str, Any]] = {}
        for rec in records:
            if rec["action"] == "revoke":
                revoke_by_user.setdefault(rec["entra_id"], rec)
        # One summary line per webhook request lists its first events with their correlation ids.
        enqueued = {ev.get("correlation_id"): parse_ts(e["timestamp"])
                    for e in self.procs.json_lines("webhook") if e.get("event") == "webhook_notifications"
                    for ev in e.get("events", [])}
        started: dict[str, float] = {}
        service: dict[str, float] = {}
        finishes: list[float] = []  # every revocation-lane task, to tell queueing from pickup
        for e in self.procs.json_lines("worker-revocation"):
            if e.get("event") != "task_finished" or not e.get("duration_ms"):
                continue
            finishes.append(parse_ts(e["timestamp"]))
            cid = e.get("correlation_id")
            if e.get("task") == "revocation.check_user" and cid:
                started.setdefault(cid, parse_ts(e["timestamp"]) - float(e["duration_ms"]) / 1000)
                service.setdefault(cid, float(e["duration_ms"]))
        finishes.sort()
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        for target in targets:
            sent = patched[target.entra_id]
            if target.sf_id in poller.seen:
                result.patch_to_inactive_ms.append((poller.seen[target.sf_id] - sent) * 1000)
            revoked = revoke_by_user.get(target.entra_id)
            if revoked is None:
                result.missing += 1
                continue
            rec = revoked
            result.outcomes[rec["outcome"]] = result.outcomes.get(rec["outcome"], 0) + 1
            observed = float(rec["detail"].get("observed_at", math.nan))
            result.total_ms.append((rec["ts"] - observed) * 1000)
            cid = rec.get("correlation_id") or ""
            chain = by_cid.get(cid, {})
            enq = enqueued.get(cid)
            start = started.get(cid)
            freeze = chain.get("freeze", {}).get("ts")
            deact = chain.get("deactivate", {}).get("ts")
            if rec.get("correlation_id") in service:
                result.service_ms.append(service[rec["correlation_id"]])
            if enq is not None and start is not None:
                # with one pool process, a task can start only when the previous one finished: what is left is pickup
                before = [f for f in finishes if f <= start + 0.0005]
                result.pickup_ms.append((start - max(enq, before[-1] if before else enq)) * 1000)
            points = [sent, observed, enq, start, freeze, deact, rec["ts"]]
            for stage, (a, b) in zip(STAGES, zip(points, points[1:], strict=False), strict=True):
                if a is not None and b is not None:
                    stages[stage].append((b - a) * 1000)
        result.stages = stages

    # --- backlog

    def enqueue_backlog(self, object_ids: list[str], n: int) -> tuple[int, float]:
        """Publish `n` sync messages through the product's own publish(); returns (count, seconds)."""
        from shared.dispatch import publish
        from shared.events import EventKind, EventSource, IdentityEvent
        from workers.app import create_app

        settings = self.settings()
        celery = create_app(settings)
        tenant = str(settings.graph_tenant_id)
        began = time.perf_counter()
        for i in range(n):
            event = IdentityEvent(kind=EventKind.USER_CHANGED, source=EventSource.OPERATOR, tenant=tenant,
                                  object_id=object_ids[i % len(object_ids)])
            publish(celery, event, task_name="sync.user_changed")
        return n, time.perf_counter() - began

    # --- the audit writer (what "auditing on" adds: chaining, signing and delivering next to the workers)

    def start_audit_writer(self) -> None:
        assert self.procs is not None
        self.env.update({"IDSYNC_AUDIT_SINKS": self.args.audit_sinks, "IDSYNC_AUDIT_HMAC_KEY": "bench-key"})
        if self.args.audit_postgres_url:
            self.env["IDSYNC_AUDIT_POSTGRES_URL"] = self.args.audit_postgres_url
        procs = self.procs
        starts = procs.log("audit-writer").count("audit_writer_leading")  # the log is appended to on a restart
        procs.start("audit-writer", ["audit-writer"],
                    ready=lambda: procs.log("audit-writer").count("audit_writer_leading") > starts)
        began = time.monotonic()
        # Catch up with everything audited so far first: the measurement is of steady-state auditing.
        wait_until(self._audit_caught_up, 300, "the audit writer to catch up", interval=0.2)
        print(f"audit writer caught up with {self.audit_head()} entries in {time.monotonic() - began:.1f} s "
              f"(sinks: {self.args.audit_sinks})")

    def stop_audit_writer(self) -> None:
        assert self.procs is not None
        self.procs.stop("audit-writer")

    def _audit_caught_up(self) -> bool:
        from shared.audit_writer import backlog

        state = backlog(self.redis, self.args.audit_sinks.split(","))
        return state["inbox_pending"] == 0 and all(s["backlog"] == 0 for s in state["sinks"].values())

    def audit_writer_cpu_s(self) -> float:
        """CPU seconds the writer process has used so far (user + system): what auditing costs the machine."""
        import psutil

        assert self.procs is not None
        times = psutil.Process(self.procs.procs["audit-writer"].pid).cpu_times()
        return float(times.user + times.system)

    def audit_head(self) -> int:
        from shared.audit_writer import head

        return int(head(self.redis)["seq"])

    def print_audit_writer(self, head_before: int, cpu_before: float, seconds: float) -> None:
        from shared.audit_writer import backlog

        state = backlog(self.redis, self.args.audit_sinks.split(","))
        lags = ", ".join(f"{name} {info['backlog']} behind ({info['lag_s']:.1f} s)" for name, info in
                         state["sinks"].items())
        print(f"  audit writer: {state['head_seq'] - head_before} entries chained and delivered during this round; "
              f"{state['inbox_pending']} waiting to be chained; sinks: {lags}; writer CPU "
              f"{self.audit_writer_cpu_s() - cpu_before:.2f} s in {seconds:.0f} s")

    # --- client call costs

    def call_costs(self, sample: Target, repeat: int = 15) -> dict[str, list[float]]:
        """Single-call latency of what a revocation does before its freeze, with the product's clients (no limiter),
        so the "task started -> frozen" stage can be attributed. Reads only: nothing is changed."""
        from shared.graph_client import GraphClient
        from shared.salesforce_client import SalesforceClient
        from workers.revocation import GRAPH_SELECT

        settings = self.settings()
        graph = GraphClient(settings, lane="revocation")
        sf = SalesforceClient(settings, lane="revocation")
        graph.get_user(sample.entra_id, select=GRAPH_SELECT)  # tokens and connections first
        sf.get_user_login(sample.sf_id)
        costs: dict[str, list[float]] = {"Graph GET /users/{id}": [], "SF find_user (SOQL)": [],
                                         "SF UserLogin (SOQL)": []}
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("Graph GET /users/{id}", lambda: graph.get_user(sample.entra_id, select=GRAPH_SELECT)),
            ("SF find_user (SOQL)", lambda: sf.find_user(sample.entra_id, sample.upn, sample.upn)),
            ("SF UserLogin (SOQL)", lambda: sf.get_user_login(sample.sf_id)),
        ]
        for _ in range(repeat):
            for label, call in calls:
                t0 = time.perf_counter()
                call()
                costs[label].append((time.perf_counter() - t0) * 1000)
        graph.close()
        sf.close()
        return costs


# ------------------------------------------------------------------------------------------------------- report


def print_scenario(result: ScenarioResult, concurrency: int) -> None:
    print(f"\n== {result.name}")
    if result.sync_depth_before is not None:
        print(f"  sync lane depth: {result.sync_depth_before} at the first disable, {result.sync_depth_after} after "
              f"the last revocation ({result.window_s:.1f} s; net drain {result.sync_drain_per_s or 0:.1f} msg/s, "
              f"after the {len(result.total_ms)} ownership-transfer follow-ups the revocations add to this lane)")
    print(f"  outcomes: {result.outcomes}  missing: {result.missing}")
    print(fmt_row("received -> deactivated (audit, HEADLINE)", result.total_ms))
    print(fmt_row("Graph PATCH -> IsActive=false (polled)", result.patch_to_inactive_ms))
    print("  breakdown (per user, joined by correlation id):")
    for stage in STAGES:
        print(fmt_row("  " + stage, result.stages.get(stage, [])))
        if stage.startswith("enqueued"):
            if concurrency == 1:  # with several pool processes "the previous task" is not well defined
                print(fmt_row("    of which pickup (start - max(enq, prev finish))", result.pickup_ms))
    print(fmt_row("revocation task duration (worker log)", result.service_ms))
    if result.service_ms:
        capacity = concurrency * 1000.0 / statistics.fmean(result.service_ms)
        print(f"  => {concurrency} revocation pool process(es) revoke ~{capacity:.1f} users/s; "
              f"offered {result.offered_per_s:.1f}/s")
    if result.deliveries:
        sizes = [float(d.get("notifications") or 0) for d in result.deliveries]
        durations = [float(d.get("duration_ms") or 0) for d in result.deliveries]
        print(f"  notification POSTs (those still in the sandbox's 500-entry activity log): {len(result.deliveries)}, "
              f"{statistics.fmean(sizes):.2f} notifications each; "
              f"POST duration p50 {percentile(durations, 50):.0f} ms, max {max(durations):.0f} ms")
    p99 = summary(result.total_ms)["p99"]
    verdict = "met" if p99 <= GOAL_P99_MS else "MISSED"
    print(f"  goal p99 <= {GOAL_P99_MS:.0f} ms: {verdict} ({p99:.0f} ms)")


def print_costs(label: str, costs: dict[str, list[float]]) -> None:
    print(f"\n== single-call costs, {label} (product clients, no limiter)")
    for name, values in costs.items():
        print(fmt_row(name, values))


def print_audit_ratio(samples: dict[bool, tuple[list[float], list[float]]], rounds: list[str]) -> None:
    """Item 4 of the audit issue: revocation p99 with the audit writer running vs without, same run. With
    `--audit abba` each mode's samples are pooled over its two rounds, so neither mode always runs second."""
    if len(samples) < 2:
        return
    print(f"\n== revocation p99 (received -> deactivated), audit writer off vs on, same run (rounds: "
          f"{', '.join(rounds)}; samples pooled per mode)")
    for index, scenario in enumerate(("A: sync lane idle", "B: sync backlog")):
        off, on = summary(samples[False][index]), summary(samples[True][index])
        print(f"  {scenario:<22} off p50 {off['p50']:4.0f} p99 {off['p99']:5.0f} ms (n={len(samples[False][index])})"
              f"   on p50 {on['p50']:4.0f} p99 {on['p99']:5.0f} ms (n={len(samples[True][index])})"
              f"   p99 ratio on/off {on['p99'] / off['p99']:5.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="users disabled per scenario")
    parser.add_argument("--backlog", type=int, default=10_000, help="sync messages queued before scenario B")
    parser.add_argument("--revocation-workers", type=int, default=1, help="revocation worker concurrency")
    parser.add_argument("--sync-workers", type=int, default=1, help="sync worker concurrency")
    parser.add_argument("--interval-ms", type=float, default=100.0, help="spacing between disables")
    parser.add_argument("--sandbox-tcp-nodelay", action="store_true",
                        help="work around the sandbox's missing TCP_NODELAY (~40 ms per GET); see the docstring")
    parser.add_argument("--set", action="append", default=[], metavar="IDSYNC_NAME=VALUE",
                        help="product setting for the webhook and workers, e.g. IDSYNC_SF_REQUESTS_PER_S=200 "
                             "(repeatable; for what-if runs, the figures of record use the defaults)")
    parser.add_argument("--audit", choices=tuple(AUDIT_MODES), default="both",
                        help="run the scenarios without the audit writer, with it, both in one run (the default; "
                             "prints both p99s and their ratio), or abba: off, on, on, off, pooled per mode (the "
                             "order of the rounds cannot favour either mode)")
    parser.add_argument("--audit-sinks", default="jsonl",
                        help="IDSYNC_AUDIT_SINKS for the writer, e.g. jsonl,postgres (with --audit-postgres-url)")
    parser.add_argument("--audit-postgres-url", default=None, help="IDSYNC_AUDIT_POSTGRES_URL for the postgres sink")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) and print its path")
    args = parser.parse_args(argv)

    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} cpu(s), "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"args: {vars(args)}")
    workdir = Path(tempfile.mkdtemp(prefix="revocation-bench-"))
    bench = Bench(args, workdir)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        bench.start()
        tenant = GraphAdmin(bench.env)
        targets, others = revocable_members(bench.server)
        modes = AUDIT_MODES[args.audit]
        need = WARMUP_USERS + 2 * args.users * len(modes)
        if len(targets) < need + 1:
            raise SystemExit(f"only {len(targets)} revocable users, need {need + 1}")
        backlog_ids = [t.entra_id for t in targets[need:]] + others

        bench.disable_all(tenant, targets[:WARMUP_USERS], "warm-up")
        samples: dict[bool, tuple[list[float], list[float]]] = {}
        writer_running = False
        for round_no, audit_on in enumerate(modes):
            label = f"audit writer ON ({args.audit_sinks})" if audit_on else "audit writer OFF"
            print(f"\n######## {label}")
            if round_no:
                # Scenario A means an idle sync lane: drop what is left of the previous round's backlog.
                assert bench.redis is not None
                left = bench.sync_depth()
                bench.redis.delete("sync")
                print(f"sync lane emptied for scenario A ({left} messages of the previous backlog dropped)")
            if audit_on and not writer_running:
                bench.start_audit_writer()
            elif not audit_on and writer_running:
                bench.stop_audit_writer()
                print("audit writer stopped: workers append to the Redis inbox only")
            writer_running = audit_on
            first = WARMUP_USERS + round_no * 2 * args.users
            set_a, set_b = targets[first:first + args.users], targets[first + args.users:first + 2 * args.users]
            chained_before = bench.audit_head()
            cpu_before, round_began = (bench.audit_writer_cpu_s() if audit_on else 0.0), time.monotonic()
            result_a = bench.disable_all(tenant, set_a, f"A: {args.users} disables, sync lane idle [{label}]")
            print_scenario(result_a, args.revocation_workers)
            if round_no == 0:
                print_costs("idle", bench.call_costs(targets[need]))

            top_up = max(0, args.backlog - bench.sync_depth())
            n, seconds = bench.enqueue_backlog(backlog_ids, top_up)
            depth = bench.sync_depth()
            print(f"\nbacklog: published {n} sync.user_changed in {seconds:.2f} s ({n / max(seconds, 1e-9):,.0f} "
                  f"msg/s) through shared.dispatch.publish; sync lane depth now {depth}")
            time.sleep(3.0)  # let the sync worker get going, so the lane is being drained during the measurement
            depth_later = bench.sync_depth()
            print(f"sync lane depth 3 s later: {depth_later} (draining {(depth - depth_later) / 3.0:.1f} msg/s)")
            if round_no == 0:
                print_costs("while the sync worker drains the backlog", bench.call_costs(targets[need]))
            result_b = bench.disable_all(tenant, set_b, f"B: {args.users} disables, {args.backlog} sync backlog "
                                         f"[{label}]", depth_probe=True)
            print_scenario(result_b, args.revocation_workers)
            if audit_on:
                bench.print_audit_writer(chained_before, cpu_before, time.monotonic() - round_began)
            pooled = samples.setdefault(audit_on, ([], []))
            pooled[0].extend(result_a.total_ms)
            pooled[1].extend(result_b.total_ms)
        print_audit_ratio(samples, ["on" if m else "off" for m in modes])
        print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        bench.stop()
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
