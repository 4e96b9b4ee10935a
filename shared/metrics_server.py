"""Serving /metrics: one HTTP port per process type, and Prometheus' multiprocess mode for Celery's prefork pool.

Why multiprocess mode: a Celery worker runs tasks in forked pool children, each with its own memory; counters kept
in memory would be invisible to the process serving /metrics and reset whenever a child is replaced. With
PROMETHEUS_MULTIPROC_DIR set, every process writes its values to files there and the serving process sums them.
prometheus-client decides this when it is first imported, so `prepare_multiprocess` must run before anything imports
it (the `idsync worker` command calls it first thing). See https://prometheus.github.io/client_python/multiprocess/

This module imports prometheus-client only inside functions, for that reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from shared.logging import get_logger

log = get_logger("idsync.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(base_dir: Path, component: str) -> Path:
    """A fresh per-process directory for the pool's metric files, exported as PROMETHEUS_MULTIPROC_DIR.

    Directories of this component left by processes that no longer exist are removed: stale files would add old
    counts to the new process's totals.
    """
    if "prometheus_client" in sys.modules and not os.environ.get(ENV):
        log.warning("metrics_multiprocess_too_late", component=component)
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{component}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"{component}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    os.environ[ENV] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(port: int, host: str, registry: Any = None) -> int | None:
    """Serve /metrics on `host:port` from a daemon thread; port 0 = off. A taken port is logged, not fatal: metrics
    must never stop a worker from revoking."""
    if not port:
        return None
    from prometheus_client import REGISTRY, start_http_server

    try:
        start_http_server(port, addr=host, registry=registry or REGISTRY)
    except OSError as err:
        log.warning("metrics_port_unavailable", port=port, error=str(err))
        return None
    log.info("metrics_serving", url=f"http://{host}:{port}/metrics")
    return port


def serve_multiprocess(port: int, host: str, path: Path) -> int | None:
    """Serve the sum of every pool process's metric files (the worker's main process calls this)."""
    if not port:
        return None
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    return serve(port, host, registry)


def serve_state(port: int, host: str, snapshot: Any) -> int | None:
    """Serve this process's metrics plus the pipeline state read from Redis at each scrape (beat does this)."""
    if not port:
        return None
    from prometheus_client import REGISTRY

    from shared.metrics import StateCollector

    REGISTRY.register(StateCollector(snapshot))
    return serve(port, host, REGISTRY)
