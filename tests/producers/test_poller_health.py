from __future__ import annotations

from producers.checkpoints import DeltaCheckpoints
from producers.poller_health import poller_problem
from shared.errors import TransportError

NOW = 1_000_000.0
INTERVAL = 60.0


def _both_succeeded(cp: DeltaCheckpoints, at: float) -> None:
    for resource in ("users", "groups"):
        cp.record_success(resource, now=at)


def test_a_poller_whose_rounds_succeed_is_healthy(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    _both_succeeded(cp, NOW - 10)
    assert poller_problem(cp, INTERVAL, now=NOW) is None


def test_a_poller_that_never_ran_is_unhealthy(redis_client):
    assert poller_problem(DeltaCheckpoints(redis_client, "t"), INTERVAL, now=NOW) == "delta users: no round has run yet"


def test_three_failed_rounds_in_a_row_are_unhealthy_even_right_after_a_success(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    _both_succeeded(cp, NOW - 5)
    error = TransportError("connection failed: ConnectError", service="graph", code="connection")
    for _ in range(2):
        cp.record_failure("groups", error, now=NOW)
    assert poller_problem(cp, INTERVAL, now=NOW) is None  # two failures: a blip
    cp.record_failure("groups", error, now=NOW)
    problem = poller_problem(cp, INTERVAL, now=NOW)
    assert problem is not None and problem.startswith("delta groups: the last 3 rounds failed")
    assert "TransportError: graph connection: connection failed" in problem
    cp.record_success("groups", now=NOW)
    assert poller_problem(cp, INTERVAL, now=NOW) is None


def test_a_last_success_older_than_three_intervals_is_unhealthy(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    _both_succeeded(cp, NOW - 3 * INTERVAL - 1)
    assert "no successful round for 181s" in (poller_problem(cp, INTERVAL, now=NOW) or "")
    _both_succeeded(cp, NOW - 3 * INTERVAL + 1)
    assert poller_problem(cp, INTERVAL, now=NOW) is None


def test_a_long_first_round_that_reads_pages_counts_as_alive(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    for resource in ("users", "groups"):
        cp.record_progress(resource, now=NOW - 5)
    assert poller_problem(cp, INTERVAL, now=NOW) is None
