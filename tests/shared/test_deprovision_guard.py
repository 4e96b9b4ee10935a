"""The mass-deprovisioning guard's rules, on fakeredis (its Lua scripts run as on Redis): reconcile runs are decided
as a set, the live pipeline counts in a sliding window, and only a person's decision releases what was held."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from shared.audit import STREAM_KEY
from shared.deprovision_guard import (
    ALLOWED,
    APPROVED,
    HELD,
    REJECTED,
    DeprovisionGuard,
    GuardError,
)
from shared.identity_links import IdentityLinks
from shared.settings import Settings, load_settings

OPERATOR = "operator:alice"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("shared.deprovision_guard.time.time", clock)
    return clock


def _settings(**guard: Any) -> Settings:
    values = {"guard_max_count": 5, "guard_max_share": 0.0, "guard_share_min_count": 0, "guard_window_s": 900.0}
    values.update(guard)
    return load_settings(_env_file=None, **values)


def _guard(redis: Any, **guard: Any) -> DeprovisionGuard:
    return DeprovisionGuard(redis, _settings(**guard))


def _link(redis: Any, n: int) -> None:
    links = IdentityLinks(redis)
    for i in range(n):
        links.set_link(f"linked-{i}", f"005L{i:014d}", f"linked{i}@contoso.com")


def _deprovisions(n: int, prefix: str = "u") -> list[tuple[str, str | None, str | None]]:
    return [(f"{prefix}{i}", f"005{prefix}{i:013d}", f"{prefix}{i}@contoso.com") for i in range(n)]


def _trail(redis: Any, action: str) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in redis.xrange(STREAM_KEY) if fields["action"] == action]


def _live(guard: DeprovisionGuard, *ids: str) -> list[tuple[str, str | None]]:
    out = []
    for entra_id in ids:
        check = guard.check_deactivation(entra_id, f"005{entra_id}", f"{entra_id}@contoso.com", "leaver:test")
        out.append((check.decision, check.run_id))
    return out


# ------------------------------------------------------------------------------------------------ reconcile runs
def test_a_reconcile_run_over_the_count_is_held_as_a_whole_under_its_run_id(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=5)
    decision = guard.hold_run("rec-1", _deprovisions(6), linked_total=10_000)

    assert (decision.held, decision.status, decision.count, decision.run_id) == (True, HELD, 6, "rec-1")
    assert "IDSYNC_GUARD_MAX_COUNT" in decision.reason and "6 deactivations" in decision.reason
    [run] = guard.held_runs()
    assert (run.run_id, run.mode, run.count, run.reason, run.held_at) == ("rec-1", "reconcile", 6, decision.reason,
                                                                          clock.now)
    assert guard.held_users() == 6
    held = _trail(redis, "guard_held")
    assert sorted(e["entra_id"] for e in held) == [f"u{i}" for i in range(6)]
    assert {e["detail"]["run_id"] for e in held} == {"rec-1"} and {e["actor"] for e in held} == {"idsync"}
    # the revocation lane, asked about any of them, freezes without deactivating
    assert _live(guard, "u0", "u5") == [(HELD, "rec-1"), (HELD, "rec-1")]


def test_a_reconcile_run_over_the_share_of_linked_users_is_held(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=0, guard_max_share=0.05, guard_share_min_count=3)
    decision = guard.hold_run("rec-1", _deprovisions(6), linked_total=100)
    assert decision.held and "6.0% of 100 linked users" in decision.reason
    assert "IDSYNC_GUARD_MAX_SHARE" in decision.reason


def test_the_share_threshold_never_holds_fewer_than_its_minimum_count(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=0, guard_max_share=0.05, guard_share_min_count=10)
    assert not guard.hold_run("small-tenant", _deprovisions(10), linked_total=40).held  # 25%, but only 10
    assert guard.hold_run("small-tenant-2", _deprovisions(11, "v"), linked_total=40).held


def test_a_run_within_the_limits_is_allowed_and_its_users_are_not_counted_again_live(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=5)
    decision = guard.hold_run("rec-ok", _deprovisions(5), linked_total=10_000)
    assert (decision.held, decision.status, decision.reason) == (False, ALLOWED, "")
    assert guard.held_runs() == []
    # pre-approved: all five deactivate, and the live window still has room for five more
    assert [d for d, _ in _live(guard, *(f"u{i}" for i in range(5)))] == [APPROVED] * 5
    assert [d for d, _ in _live(guard, *(f"x{i}" for i in range(5)))] == [ALLOWED] * 5
    assert _trail(redis, "guard_held") == []


def test_a_resumed_run_asks_again_and_gets_its_first_answer(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=5)
    first = guard.hold_run("rec-1", _deprovisions(8), linked_total=1000)
    again = guard.hold_run("rec-1", _deprovisions(3), linked_total=1000)  # the rest of a run killed mid-way
    assert again == first
    assert len(_trail(redis, "guard_held")) == 8  # not audited twice


def test_zero_disables_a_threshold_and_both_zero_turn_the_guard_off(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=0, guard_max_share=0.0)
    assert not guard.hold_run("rec-1", _deprovisions(500), linked_total=500).held
    assert {d for d, _ in _live(guard, *(f"x{i}" for i in range(200)))} == {ALLOWED}
    assert redis.exists("idsync:guard:live:window") == 0  # off means no bookkeeping on the hot path either


def test_a_user_held_in_a_live_run_stays_in_it_when_a_reconcile_run_holds_them_too(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=1)
    _live(guard, "a")
    [(decision, live_run)] = _live(guard, "u0")
    assert decision == HELD
    guard.hold_run("rec-1", _deprovisions(3), linked_total=1000)
    assert guard.held_run_of("u0") == live_run and guard.held_run_of("u1") == "rec-1"
    released = guard.approve("rec-1", OPERATOR)
    assert sorted(u.entra_id for u in released) == ["u1", "u2"]  # u0 waits for the live run's decision
    assert _live(guard, "u0") == [(HELD, live_run)]


# ------------------------------------------------------------------------------------------------ the live window
def test_live_deactivations_past_the_count_within_the_window_are_held_in_one_live_run(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=3)
    results = _live(guard, "a", "b", "c", "d", "e")
    assert [d for d, _ in results] == [ALLOWED, ALLOWED, ALLOWED, HELD, HELD]
    run_id = results[3][1]
    assert run_id == "live-20231114-1" and results[4][1] == run_id
    [run] = guard.held_runs()
    assert (run.run_id, run.mode, run.count) == (run_id, "live", 2)
    assert "4 deactivations exceed the limit of 3" in run.reason and "within 15 min" in run.reason
    assert [e["entra_id"] for e in _trail(redis, "guard_held")] == ["d", "e"]


def test_a_repeated_check_neither_counts_twice_nor_changes_a_decision(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=2)
    assert [d for d, _ in _live(guard, "a", "a", "b", "a", "b")] == [ALLOWED] * 5  # retries, duplicate hints
    assert [d for d, _ in _live(guard, "c", "c")] == [HELD, HELD]
    assert len(_trail(redis, "guard_held")) == 1
    assert guard.check_deactivation("c", None, None).newly_held is False


def test_a_leaver_within_the_window_of_a_held_burst_is_held_too(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=2)
    _live(guard, "a", "b", "c")
    clock.now += 600
    assert _live(guard, "leaver") == [(HELD, "live-20231114-1")]


def test_once_the_burst_slid_out_of_the_window_a_single_leaver_is_not_delayed(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=2, guard_window_s=900)
    _live(guard, "a", "b", "c")
    clock.now += 901
    assert _live(guard, "leaver") == [(ALLOWED, None)]
    assert [r.run_id for r in guard.held_runs()] == ["live-20231114-1"]  # still waiting for a decision
    assert _live(guard, "c") == [(HELD, "live-20231114-1")]  # and what it holds stays held


def test_the_live_share_is_taken_of_the_users_idsync_links(redis, clock) -> None:
    _link(redis, 100)
    guard = _guard(redis, guard_max_count=0, guard_max_share=0.05, guard_share_min_count=3)
    assert [d for d, _ in _live(guard, *"abcdef")] == [ALLOWED] * 5 + [HELD]
    assert "6.0% of 100 linked users" in guard.held_runs()[0].reason


# ------------------------------------------------------------------------------------------------ decisions
def test_approve_releases_every_held_user_audits_the_operator_and_restarts_the_count(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=2)
    run_id = _live(guard, "a", "b", "c", "d")[2][1]
    assert run_id is not None

    released = guard.approve(run_id, OPERATOR)

    assert [u.entra_id for u in released] == ["c", "d"]
    assert (released[0].sf_user_id, released[0].upn, released[0].rule) == ("005c", "c@contoso.com", "leaver:test")
    approved = _trail(redis, "guard_approved")
    assert sorted(e["entra_id"] for e in approved) == ["c", "d"] and {e["actor"] for e in approved} == {OPERATOR}
    assert guard.held_runs() == [] and guard.held_users() == 0
    assert [d for d, _ in _live(guard, "c", "d")] == [APPROVED, APPROVED]  # the release tasks get through
    guard.approval_used("c")
    assert _live(guard, "e", "f") == [(ALLOWED, None), (ALLOWED, None)]  # a person decided: counting starts again
    assert _live(guard, "g") == [(HELD, "live-20231114-2")]  # and a new burst opens a new run


def test_approving_twice_returns_the_users_again_without_auditing_twice(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=1)
    run_id = _live(guard, "a", "b", "c")[1][1]
    assert run_id is not None
    first = guard.approve(run_id, OPERATOR)
    assert guard.approve(run_id, "operator:bob") == first
    assert len(_trail(redis, "guard_approved")) == 2


def test_reject_keeps_everyone_active_and_frozen_and_does_not_hold_them_again(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=2)
    run_id = _live(guard, "a", "b", "c", "d")[2][1]
    assert run_id is not None

    rejected = guard.reject(run_id, OPERATOR)

    assert [u.entra_id for u in rejected] == ["c", "d"]
    trail = _trail(redis, "guard_rejected")
    assert sorted(e["entra_id"] for e in trail) == ["c", "d"] and {e["actor"] for e in trail} == {OPERATOR}
    assert guard.held_runs() == []
    # re-planned and still out of scope: kept (frozen, active), not counted, no new run
    assert _live(guard, "c", "d") == [(REJECTED, run_id), (REJECTED, run_id)]
    assert guard.held_runs() == []
    # the burst's first deactivations still count: a further one within the window is held, in a new run
    assert _live(guard, "e") == [(HELD, "live-20231114-2")]


def test_a_rejection_is_forgotten_after_the_keep_time_or_when_the_operator_retries(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=1, guard_reject_keep_s=3600)
    run_id = _live(guard, "a", "b")[1][1]
    assert run_id is not None
    guard.reject(run_id, OPERATOR)
    assert 0 < redis.ttl("idsync:guard:rejected:b") <= 3600
    assert guard.forget_rejection("b") is True
    clock.now += 901
    assert _live(guard, "b") == [(ALLOWED, None)]


def test_a_decided_run_cannot_be_decided_the_other_way_and_an_unknown_run_is_named(redis, clock) -> None:
    guard = _guard(redis, guard_max_count=1)
    run_id = _live(guard, "a", "b")[1][1]
    assert run_id is not None
    guard.reject(run_id, OPERATOR)
    with pytest.raises(GuardError, match=f"run {run_id} was rejected already, by {OPERATOR}"):
        guard.approve(run_id, "operator:bob")
    with pytest.raises(GuardError, match="no held run 'live-nope'"):
        guard.reject("live-nope", OPERATOR)
