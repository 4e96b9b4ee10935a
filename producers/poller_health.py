"""Is the delta poller doing its job? The answer behind `idsync health poller` (a container healthcheck).

Why not just "a round happened recently": after a restart, the previous run's last round is still recent while every
new round fails, and a healthcheck that reads only the last success time stays green for minutes over a dead safety
net. So a poller is unhealthy when its last rounds failed in a row, or when neither a successful round nor a page of
a round in progress (a first enumeration of a big tenant takes minutes) happened within a few intervals.
"""

from __future__ import annotations

import time

from producers.checkpoints import DeltaCheckpoints

#: Unhealthy after this many failed rounds in a row of one resource.
MAX_FAILED_ROUNDS = 3
#: Unhealthy when nothing succeeded (or progressed) within this many polling intervals.
STALE_INTERVALS = 3
RESOURCES = ("users", "groups")


def poller_problem(checkpoints: DeltaCheckpoints, interval_s: float, now: float | None = None) -> str | None:
    """None when healthy, else one line saying what is wrong (for the healthcheck's output)."""
    now = time.time() if now is None else now
    limit = STALE_INTERVALS * interval_s
    for resource in RESOURCES:
        outcome = checkpoints.outcome(resource)
        failures = outcome["consecutive_failures"]
        error = outcome["last_error"]
        if failures >= MAX_FAILED_ROUNDS and error is not None:
            return (f"delta {resource}: the last {failures} rounds failed, last with {error['class']}: "
                    f"{error['message'][:120]}")
        alive = max((t for t in (outcome["last_success"], outcome["last_progress"]) if t is not None), default=None)
        if alive is None:
            return f"delta {resource}: no round has run yet"
        if now - alive > limit:
            return f"delta {resource}: no successful round for {now - alive:.0f}s (limit {limit:.0f}s)"
    return None
