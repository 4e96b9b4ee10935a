"""The sync lane without a mapping file (leavers only): hints go to the backlog, a drain reactivates users idsync
revoked once Entra re-enables them, tombstones protect revocations, and the lane pauses near Salesforce's limit.

(Joiners and movers with a mapping run against the real sandbox: tests/shared/provisioning and
tests/integration/test_joiners_movers.py.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import audit as audit_mod
from shared import parking
from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.limiter import SYNC_PAUSE_RECHECK_S

ENTRA_ID = "0a1b2c3d-0000-4000-8000-000000000003"
UPN = "mover@contoso.com"
SF_ID = "005000000000003AAA"


def _event(kind: EventKind, observed_at: datetime | None = None, object_id: str = ENTRA_ID) -> IdentityEvent:
    extra: dict[str, Any] = {"observed_at": observed_at} if observed_at else {}
    return IdentityEvent(kind=kind, source=EventSource.DELTA, tenant="t1", object_id=object_id, **extra)


def _outcomes(ctx, entra_id: str = ENTRA_ID) -> list[str]:
    """The sync lane's per-user outcomes, oldest first, from the audit trail."""
    return [r["outcome"] for r in reversed(audit_mod.recent(ctx.redis, 200))
            if r["action"] == "sync_user" and r["entra_id"] == entra_id]


def test_a_sync_event_older_than_the_revocation_tombstone_is_skipped(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    graph.add_user(ENTRA_ID, UPN, enabled=True)  # whatever Graph says, the stale event must not act
    salesforce.add_user(SF_ID, UPN, federation_id=UPN, active=False)
    revoked_at = datetime.now(UTC)
    ctx.links.set_tombstone(ENTRA_ID, revoked_at.timestamp())
    publish(app, _event(EventKind.USER_CHANGED, revoked_at - timedelta(seconds=5)), "sync.user_changed")
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert finished.outcomes("sync.user_changed") == ["queued"]
    assert _outcomes(ctx) == ["skipped_tombstone"]
    assert graph.calls == [] and salesforce.calls == []
    assert ctx.links.tombstone(ENTRA_ID) == revoked_at.timestamp()


def test_a_re_enabled_user_is_reactivated_and_the_tombstone_cleared(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    graph.add_user(ENTRA_ID, UPN, enabled=True)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN, active=False)
    salesforce.frozen[SF_ID] = True
    ctx.links.set_tombstone(ENTRA_ID, time.time() - 60)
    publish(app, _event(EventKind.USER_ENABLED))
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert _outcomes(ctx) == ["reactivated"]
    assert [name for name, _ in salesforce.writes()] == ["activate_user", "unfreeze_user"]
    assert salesforce.users[SF_ID]["IsActive"] is True and salesforce.frozen[SF_ID] is False
    assert ctx.links.tombstone(ENTRA_ID) is None


def test_an_inactive_salesforce_user_that_idsync_did_not_revoke_is_left_inactive(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    graph.add_user(ENTRA_ID, UPN, enabled=True)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN, active=False)  # deactivated by a Salesforce admin
    salesforce.frozen[SF_ID] = True
    publish(app, _event(EventKind.USER_CHANGED), "sync.user_changed")
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert _outcomes(ctx) == ["in_sync"]
    assert salesforce.writes() == []
    assert salesforce.users[SF_ID]["IsActive"] is False and salesforce.frozen[SF_ID] is True


def test_a_sync_event_for_a_disabled_user_is_handed_to_the_revocation_lane(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    graph.add_user(ENTRA_ID, UPN, enabled=False)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)
    publish(app, _event(EventKind.USER_CHANGED), "sync.user_changed")
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert _outcomes(ctx) == ["handed_to_revocation"]
    assert finished.outcomes("revocation.revoke_user") == ["revoked"]


def test_while_sync_is_paused_a_sync_task_parks_itself_and_revocation_proceeds(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    leaver = "0a1b2c3d-0000-4000-8000-0000000000ff"
    graph.add_user(ENTRA_ID, UPN, enabled=True)
    graph.add_user(leaver, "gone@contoso.com", enabled=False)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN, active=False)
    salesforce.add_user("005LEAVER", "gone@contoso.com", federation_id="gone@contoso.com")
    ctx.limiter.record_sf_usage(96_000, 100_000)  # above the pause share: the rest is kept for revocations
    assert ctx.limiter.sync_paused()

    publish(app, _event(EventKind.USER_ENABLED))
    publish(app, _event(EventKind.USER_DISABLED, object_id=leaver))
    waiter(lambda: finished.outcomes("revocation.revoke_user") and finished.of("sync.drain_users")
           and finished.of("sync.transfer_ownership"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert salesforce.users["005LEAVER"]["IsActive"] is False
    assert salesforce.users[SF_ID]["IsActive"] is False  # the sync task did not call Salesforce
    assert ("find_user", (ENTRA_ID, UPN, UPN)) not in salesforce.calls
    due = parking.lease_due(ctx.redis, time.time() + SYNC_PAUSE_RECHECK_S + 1)
    # the hint is in the backlog; the drain that would apply it and the follow-up wait, parked
    assert sorted(m.task for m in due) == ["sync.drain_users", "sync.transfer_ownership"]
    assert all(m.due_at >= time.time() + SYNC_PAUSE_RECHECK_S - 30 for m in due)
    assert all(m.headers["deferred_from"] and m.task_id != m.headers["deferred_from"] for m in due)
    assert ctx.dlq.size() == 0


def test_transfer_ownership_records_one_pending_transfer_per_identity(app, worker, ctx, finished, waiter):
    ctx.links.set_link(ENTRA_ID, SF_ID, UPN)
    event = _event(EventKind.OWNERSHIP_TRANSFER)
    publish(app, event)
    publish(app, event)
    waiter(lambda: len(finished.outcomes("sync.transfer_ownership")) == 2)

    [pending] = ctx.links.pending_transfers()
    assert pending["sf_user_id"] == SF_ID and pending["correlation_id"] == event.correlation_id
    assert audit_mod.recent(ctx.redis, 1)[0]["action"] == "transfer_ownership"


def test_without_a_mapping_a_group_change_is_audited_and_changes_nothing(app, worker, ctx, finished, waiter):
    event = _event(EventKind.GROUP_CHANGED, object_id="group-1")
    publish(app, event)
    waiter(lambda: finished.outcomes("sync.group_changed"))

    assert finished.outcomes("sync.group_changed") == ["no_mapping"]
    [record] = audit_mod.recent(ctx.redis, 1)
    assert record["action"] == "group_changed" and record["detail"] == {"group_id": "group-1"}
    assert record["correlation_id"] == event.correlation_id


def _revoked_earlier(ctx, graph, salesforce, revoked_at: float) -> None:
    """An earlier revocation: Salesforce user inactive and frozen, tombstone written; Entra has re-enabled the user."""
    graph.add_user(ENTRA_ID, UPN, enabled=True)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN, active=False)
    salesforce.frozen[SF_ID] = True
    ctx.links.set_tombstone(ENTRA_ID, revoked_at)


def test_a_revocation_landing_between_the_tombstone_check_and_the_activation_is_not_undone(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    _revoked_earlier(ctx, graph, salesforce, time.time() - 60)
    revoked_again_at = time.time()

    def revocation_lands() -> None:  # while the sync task looks the user up in Salesforce
        graph.disable(ENTRA_ID)
        ctx.links.set_tombstone(ENTRA_ID, revoked_again_at)

    salesforce.on("find_user", revocation_lands)
    publish(app, _event(EventKind.USER_ENABLED, datetime.now(UTC) - timedelta(seconds=30)))
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert _outcomes(ctx) == ["skipped_tombstone"]
    assert "activate_user" not in salesforce.names() and "unfreeze_user" not in salesforce.names()
    assert salesforce.users[SF_ID]["IsActive"] is False and salesforce.frozen[SF_ID] is True
    assert ctx.links.tombstone(ENTRA_ID) == revoked_again_at


def test_a_revocation_landing_during_the_activation_sends_the_user_back_to_the_revocation_lane(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    _revoked_earlier(ctx, graph, salesforce, time.time() - 60)
    revoked_again_at = time.time()

    def revocation_lands() -> None:  # after the re-check, before our activation reaches Salesforce
        graph.disable(ENTRA_ID)
        ctx.links.set_tombstone(ENTRA_ID, revoked_again_at)

    salesforce.on("activate_user", revocation_lands)
    publish(app, _event(EventKind.USER_ENABLED, datetime.now(UTC) - timedelta(seconds=30)))
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert _outcomes(ctx) == ["handed_to_revocation"]
    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert salesforce.users[SF_ID]["IsActive"] is False and salesforce.frozen[SF_ID] is True
    assert ctx.links.tombstone(ENTRA_ID) == revoked_again_at  # the newer tombstone was never deleted


def test_reactivation_through_a_stale_link_finds_the_salesforce_user_again(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    _revoked_earlier(ctx, graph, salesforce, time.time() - 60)
    ctx.links.set_link(ENTRA_ID, "005GONE0000000AAA", UPN)  # written against an org that was refreshed since
    publish(app, _event(EventKind.USER_ENABLED))
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert _outcomes(ctx) == ["reactivated"]
    assert salesforce.users[SF_ID]["IsActive"] is True and salesforce.frozen[SF_ID] is False
    assert ctx.links.get_link(ENTRA_ID).sf_user_id == SF_ID
    assert ctx.dlq.size() == 0 and ctx.links.tombstone(ENTRA_ID) is None
