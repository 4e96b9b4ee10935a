"""The mass-deprovisioning guard on the revocation lane (real Redis broker, in-process worker, fake Graph and
Salesforce): past the threshold users are frozen but not deactivated, nothing of theirs is reassigned, and only
`approve` (release tasks through the dispatch table) or `reject` (a review item, still frozen) moves them on."""

from __future__ import annotations

from typing import Any

import pytest

from shared import audit as audit_mod
from shared.deprovision_guard import REVIEW_TOPIC, DeprovisionGuard, publish_release
from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.settings import Settings
from tests.workers.conftest import make_settings

OPERATOR = "operator:alice"


@pytest.fixture
def settings(redis_server: Any) -> Settings:
    return make_settings(redis_server.url, guard_max_count=2, guard_max_share=0.0)


def _leavers(graph: Any, salesforce: Any, n: int) -> list[str]:
    ids = []
    for i in range(n):
        entra_id = f"0a1b2c3d-0000-4000-8000-0000000001{i:02d}"
        upn = f"leaver{i}@contoso.com"
        graph.add_user(entra_id, upn, enabled=False)
        salesforce.add_user(f"005000000000{i:03d}AAA", upn, federation_id=upn)
        ids.append(entra_id)
    return ids


def _sf(i: int) -> str:
    return f"005000000000{i:03d}AAA"


def _disable(app: Any, entra_id: str) -> None:
    publish(app, IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.WEBHOOK, tenant="t1",
                               object_id=entra_id))


def _hold_three(app: Any, ctx: Any, graph: Any, salesforce: Any, finished: Any, waiter: Any) -> tuple[list[str], str]:
    """Two leavers go through, the third is held; returns the ids and the live run id."""
    ids = _leavers(graph, salesforce, 3)
    for entra_id in ids:
        _disable(app, entra_id)
    waiter(lambda: len(finished.outcomes("revocation.revoke_user")) == 3)
    waiter(lambda: len(finished.outcomes("sync.transfer_ownership")) == 2)
    [run] = DeprovisionGuard(ctx.redis, ctx.settings).held_runs()
    return ids, run.run_id


def test_past_the_threshold_a_leaver_is_frozen_not_deactivated_and_nothing_is_reassigned(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    ids, run_id = _hold_three(app, ctx, graph, salesforce, finished, waiter)

    assert sorted(finished.outcomes("revocation.revoke_user")) == ["frozen_held", "revoked", "revoked"]
    assert [salesforce.users[_sf(i)]["IsActive"] for i in range(3)] == [False, False, True]
    assert [salesforce.frozen[_sf(i)] for i in range(3)] == [True, True, True]  # access blocked at once
    assert [sf for name, (sf,) in salesforce.writes() if name == "deactivate_user"] == [_sf(0), _sf(1)]
    [held] = [r for r in audit_mod.recent(ctx.redis, 50) if r["action"] == "guard_held"]
    assert (held["entra_id"], held["detail"]["run_id"]) == (ids[2], run_id)
    revoke = [r for r in audit_mod.recent(ctx.redis, 50) if r["action"] == "revoke" and r["entra_id"] == ids[2]]
    assert [r["outcome"] for r in revoke] == ["frozen_held"]
    assert {t["entra_id"] for t in ctx.links.pending_transfers()} == set(ids[:2])  # no transfer for the held one
    # a duplicate hint for the held user changes nothing
    _disable(app, ids[2])
    waiter(lambda: len(finished.outcomes("revocation.revoke_user")) == 4)
    assert finished.outcomes("revocation.revoke_user")[-1] == "frozen_held"
    assert salesforce.users[_sf(2)]["IsActive"] is True


def test_approve_deactivates_the_held_users_through_release_tasks_and_their_transfers_follow(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    ids, run_id = _hold_three(app, ctx, graph, salesforce, finished, waiter)
    guard = DeprovisionGuard(ctx.redis, ctx.settings)

    released = guard.approve(run_id, OPERATOR)
    assert publish_release(app, released, "t1") == 1

    waiter(lambda: finished.outcomes("revocation.release_held"))
    assert finished.outcomes("revocation.release_held") == ["revoked"]
    assert salesforce.users[_sf(2)]["IsActive"] is False
    waiter(lambda: len(finished.outcomes("sync.transfer_ownership")) == 3)
    assert ids[2] in {t["entra_id"] for t in ctx.links.pending_transfers()}
    assert guard.held_runs() == [] and ctx.redis.exists(f"idsync:guard:approved:{ids[2]}") == 0  # mark used up


def test_an_approved_user_enabled_again_meanwhile_is_handed_to_sync_not_deactivated(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    ids, run_id = _hold_three(app, ctx, graph, salesforce, finished, waiter)
    graph.enable(ids[2])
    publish_release(app, DeprovisionGuard(ctx.redis, ctx.settings).approve(run_id, OPERATOR), "t1")
    waiter(lambda: finished.outcomes("revocation.release_held"))
    assert finished.outcomes("revocation.release_held") == ["handed_to_sync"]
    assert salesforce.users[_sf(2)]["IsActive"] is True


def test_after_reject_a_user_still_out_stays_frozen_and_active_with_a_review_item(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    ids, run_id = _hold_three(app, ctx, graph, salesforce, finished, waiter)
    DeprovisionGuard(ctx.redis, ctx.settings).reject(run_id, OPERATOR)

    _disable(app, ids[2])  # Entra still says disabled: the next hint finds the rejection
    waiter(lambda: len(finished.outcomes("revocation.revoke_user")) == 4)

    assert finished.outcomes("revocation.revoke_user")[-1] == "frozen_rejected"
    assert salesforce.users[_sf(2)]["IsActive"] is True and salesforce.frozen[_sf(2)] is True
    item = ctx.links.review(ids[2], REVIEW_TOPIC)
    assert item is not None and item["code"] == "GUARD_REJECTED" and run_id in item["detail"]
    assert "idsync review resolve ID --retry" in item["fix"]
    assert DeprovisionGuard(ctx.redis, ctx.settings).held_runs() == []  # not held again


def test_a_single_leaver_is_not_delayed_while_nothing_is_held(app, worker, ctx, graph, salesforce, finished,
                                                             waiter) -> None:
    [entra_id] = _leavers(graph, salesforce, 1)
    _disable(app, entra_id)
    waiter(lambda: finished.outcomes("sync.transfer_ownership"))
    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert [name for name, _ in salesforce.writes()] == ["freeze_user", "deactivate_user"]
    assert ctx.redis.zcard("idsync:guard:live:window") == 1  # counted, one script call, nothing held
    assert DeprovisionGuard(ctx.redis, ctx.settings).held_runs() == []


def test_a_leaver_after_the_burst_left_the_window_is_not_delayed_while_the_run_still_waits(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    import time

    from workers import context

    context.override(settings=make_settings(ctx.settings.redis_url, guard_max_count=2, guard_max_share=0.0,
                                            guard_window_s=1.0))
    ids = _leavers(graph, salesforce, 4)
    for entra_id in ids[:3]:
        _disable(app, entra_id)
    waiter(lambda: len(finished.outcomes("revocation.revoke_user")) == 3)
    assert sorted(finished.outcomes("revocation.revoke_user")) == ["frozen_held", "revoked", "revoked"]
    time.sleep(1.2)  # the burst slides out of the 1 s window

    _disable(app, ids[3])
    waiter(lambda: len(finished.outcomes("revocation.revoke_user")) == 4)

    assert finished.outcomes("revocation.revoke_user")[-1] == "revoked"
    assert salesforce.users[_sf(3)]["IsActive"] is False
    assert len(DeprovisionGuard(ctx.redis, ctx.settings).held_runs()) == 1  # the held run still waits
