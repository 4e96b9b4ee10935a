"""Deciding a very large held run: how long `hold_run`, `idsync approve` and `idsync reject` take, and how long they
keep Redis busy for everyone else (the revocation lane included).

Why it matters: each decision is one Lua script over the whole run (atomic: a run is held, approved or rejected as a
whole, never half), and Redis runs one script at a time. A scope mistake at 50,000 users is exactly the run the guard
exists for, so its decision must not stall leavers for long. There is no goal in the issue; the revocation goal
(p99 <= 1 s) is the yardstick: the longest stall is printed next to it.

What runs: a private redis-server (the embedded one `make run` uses), the product's `DeprovisionGuard` with the
default thresholds, and a probe process sending PING every millisecond: the longest PING round trip during a decision
is the longest another client (a revocation worker) waited for Redis.

    .venv/bin/python bench/guard_decisions.py [--sizes 10000,50000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis as redis_lib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.deprovision_guard import DeprovisionGuard  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.settings import load_settings  # noqa: E402

REVOCATION_GOAL_MS = 1000.0


def _probe(url: str, stop: Any, worst: Any) -> None:
    """In a process of its own (no shared GIL): PING every millisecond, keep the longest round trip (seconds)."""
    client = redis_lib.Redis.from_url(url)
    client.ping()
    while not stop.is_set():
        started = time.perf_counter()
        client.ping()
        worst.value = max(worst.value, time.perf_counter() - started)
        time.sleep(0.001)


def timed(url: str, op: Callable[[], object]) -> tuple[float, float]:
    """(seconds `op` took, longest PING round trip another process saw meanwhile, in ms)."""
    stop, worst = multiprocessing.Event(), multiprocessing.Value("d", 0.0)
    probe = multiprocessing.Process(target=_probe, args=(url, stop, worst), daemon=True)
    probe.start()
    time.sleep(0.3)  # connected and pinging
    started = time.perf_counter()
    op()
    took = time.perf_counter() - started
    stop.set()
    probe.join(timeout=10)
    return took, float(worst.value) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000", help="users per held run, comma-separated")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} cpu(s), "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} at start")
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="guard-bench-")) / "redis")
    server.start()
    try:
        client = redis_lib.Redis.from_url(server.url, decode_responses=True)
        settings = load_settings(_env_file=None, log_level="WARNING")
        configure_logging(settings, stream=sys.stderr)  # one warning per decision; the table goes to stdout
        guard = DeprovisionGuard(client, settings)
        print(f"{'users':>7} | {'decision':<9} | {'took':>7} | longest stall of another client (goal for a leaver: "
              f"p99 <= {REVOCATION_GOAL_MS:.0f} ms end to end)")
        for size in (int(s) for s in args.sizes.split(",")):
            for decision in ("approve", "reject"):
                run_id = f"bench-{decision}-{size}"
                rows = [(f"{run_id}-{i}", f"005{i:015d}", f"user{i}@contoso.example.com") for i in range(size)]
                took, stall = timed(server.url, partial(guard.hold_run, run_id, rows, 2 * size))
                if decision == "approve":  # the hold is the same either way: print it once
                    print(f"{size:>7,} | {'hold_run':<9} | {took:6.2f}s | {stall:6.0f} ms")
                decide = guard.approve if decision == "approve" else guard.reject
                took, stall = timed(server.url, partial(decide, run_id, "operator:bench"))
                print(f"{size:>7,} | {decision:<9} | {took:6.2f}s | {stall:6.0f} ms")
    finally:
        server.stop()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
