"""The revocation lane end to end: a real Redis broker, an in-process worker, fake Graph and Salesforce."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared import audit as audit_mod
from shared.dispatch import publish
from shared.errors import SERVICE_SALESFORCE, PermanentError
from shared.events import EventKind, EventSource, IdentityEvent

ENTRA_ID = "0a1b2c3d-0000-4000-8000-000000000001"
UPN = "leaver@contoso.com"
SF_ID = "005000000000001AAA"


def _event(kind: EventKind = EventKind.USER_DISABLED, **extra: Any) -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant="t1", object_id=ENTRA_ID, **extra)


def _leaver(graph: Any, salesforce: Any) -> None:
    graph.add_user(ENTRA_ID, UPN, enabled=False)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)


def test_a_disabled_user_is_frozen_then_deactivated_and_tombstoned(
    app, worker, ctx, graph, salesforce, finished, waiter
) -> None:
    _leaver(graph, salesforce)
    event = _event()
    publish(app, event)

    waiter(lambda: finished.outcomes("sync.transfer_ownership"))
    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert [name for name, _ in salesforce.writes()] == ["freeze_user", "deactivate_user"]
    assert salesforce.frozen[SF_ID] is True and salesforce.users[SF_ID]["IsActive"] is False
    assert ctx.links.tombstone(ENTRA_ID) == event.observed_at.timestamp()
    assert ctx.links.get_link(ENTRA_ID).sf_user_id == SF_ID
    actions = [(r["action"], r["outcome"]) for r in reversed(audit_mod.recent(ctx.redis, 10))]
    assert actions[:3] == [("freeze", "done"), ("deactivate", "done"), ("revoke", "revoked")]
    assert all(r["correlation_id"] == event.correlation_id for r in audit_mod.recent(ctx.redis, 10))
    # The ownership transfer ran as a separate sync-lane task with the same correlation id.
    assert ctx.links.pending_transfers()[0]["correlation_id"] == event.correlation_id
    assert ctx.dlq.size() == 0


def test_a_duplicate_revocation_event_makes_no_extra_writes(app, worker, ctx, graph, salesforce, finished, waiter):
    _leaver(graph, salesforce)
    publish(app, _event())
    publish(app, _event(kind=EventKind.USER_CHANGED))  # a duplicate hint via the other task
    waiter(lambda: len(finished.outcomes("sync.transfer_ownership")) == 2)

    assert sorted(finished.outcomes("revocation.revoke_user") + finished.outcomes("revocation.check_user")) == [
        "already_revoked",
        "revoked",
    ]
    assert [name for name, _ in salesforce.writes()] == ["freeze_user", "deactivate_user"]
    assert len(ctx.links.pending_transfers()) == 1


def test_a_deactivation_blocker_leaves_the_user_frozen_with_a_review_item_not_a_dead_letter(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    _leaver(graph, salesforce)
    blocker = PermanentError(
        "Cannot deactivate the default lead owner",
        service=SERVICE_SALESFORCE,
        status=400,
        code="FIELD_INTEGRITY_EXCEPTION",
    )
    salesforce.fail("deactivate_user", blocker)
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["frozen_blocked"]
    assert salesforce.frozen[SF_ID] is True and salesforce.users[SF_ID]["IsActive"] is True
    [review] = ctx.links.list_reviews()
    assert review["sf_user_id"] == SF_ID and review["reason"] == "deactivation_blocked"
    assert "FIELD_INTEGRITY_EXCEPTION" in review["detail"] and "default lead owner" in review["detail"]
    assert ctx.dlq.size() == 0


def test_a_hard_deleted_user_is_found_through_the_stored_link(app, worker, ctx, graph, salesforce, finished, waiter):
    salesforce.add_user(SF_ID, "renamed@contoso.com", federation_id=None)
    ctx.links.set_link(ENTRA_ID, SF_ID, UPN)  # remembered from an earlier sync; Graph no longer knows the user
    publish(app, _event(kind=EventKind.USER_HARD_DELETED))
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert [name for name, _ in graph.calls] == ["get_user", "get_deleted_user"]
    assert [name for name, _ in salesforce.writes()] == ["freeze_user", "deactivate_user"]


def test_a_soft_deleted_user_is_matched_by_its_original_upn(app, worker, ctx, graph, salesforce, finished, waiter):
    _leaver(graph, salesforce)
    graph.soft_delete(ENTRA_ID)
    publish(app, _event(kind=EventKind.USER_SOFT_DELETED))
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert ("find_user", (ENTRA_ID, UPN, UPN)) in salesforce.calls


def test_an_unknown_salesforce_user_is_audited_not_an_error(app, worker, ctx, graph, salesforce, finished, waiter):
    graph.add_user(ENTRA_ID, UPN, enabled=False)
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["no_salesforce_user"]
    assert audit_mod.recent(ctx.redis, 1)[0]["outcome"] == "no_salesforce_user"
    assert ctx.dlq.size() == 0 and salesforce.writes() == []


def test_check_user_hands_an_enabled_user_to_the_sync_lane(app, worker, ctx, graph, salesforce, finished, waiter):
    graph.add_user(ENTRA_ID, UPN, enabled=True)
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)
    publish(app, _event(kind=EventKind.USER_CHANGED))
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert finished.outcomes("revocation.check_user") == ["handed_to_sync"]
    # the hint went to the sync backlog; the drain (no mapping in these tests: leavers only) found nothing to undo
    assert [r["outcome"] for r in audit_mod.recent(ctx.redis, 20) if r["action"] == "sync_user"] == ["in_sync"]
    assert salesforce.writes() == []


def test_revoke_user_does_not_revoke_a_user_graph_says_is_enabled_again(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    graph.add_user(ENTRA_ID, UPN, enabled=True)  # re-enabled after the disable event was sent
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)
    publish(app, _event(observed_at=datetime(2020, 1, 1, tzinfo=UTC)))
    waiter(lambda: finished.outcomes("sync.drain_users"))

    assert finished.outcomes("revocation.revoke_user") == ["handed_to_sync"]
    assert salesforce.writes() == [] and ctx.links.tombstone(ENTRA_ID) is None


def test_a_stored_link_to_a_salesforce_user_that_no_longer_exists_is_dropped_and_the_user_found_again(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    _leaver(graph, salesforce)
    ctx.links.set_link(ENTRA_ID, "005GONE0000000AAA", UPN)  # written against an org that was refreshed since
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert salesforce.users[SF_ID]["IsActive"] is False and salesforce.frozen[SF_ID] is True
    assert ctx.links.get_link(ENTRA_ID).sf_user_id == SF_ID
    [relink] = [r for r in audit_mod.recent(ctx.redis, 20) if r["action"] == "relink"]
    assert relink["outcome"] == "stale_link_dropped" and relink["detail"]["stale_sf_user_id"] == "005GONE0000000AAA"
    assert ctx.dlq.size() == 0


def test_a_stale_link_with_nobody_left_to_find_is_audited_not_dead_lettered(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    ctx.links.set_link(ENTRA_ID, "005GONE0000000AAA", UPN)  # hard-deleted in Entra, and not in this org
    publish(app, _event(kind=EventKind.USER_HARD_DELETED))
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["no_salesforce_user"]
    link = ctx.links.get_link(ENTRA_ID)
    assert link.sf_user_id is None and link.upn == UPN  # the UPN stays: it is the only way to find the user again
    assert ctx.dlq.size() == 0


def test_a_blocked_deactivation_opens_a_review_item_with_a_stable_id_saying_why(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    _leaver(graph, salesforce)
    blocker = PermanentError("Cannot deactivate the last admin", service=SERVICE_SALESFORCE, status=400,
                             code="CANNOT_DISABLE_LAST_ADMIN")
    salesforce.fail("deactivate_user", blocker, times=2)
    event = _event()
    publish(app, event)
    waiter(lambda: finished.outcomes("revocation.revoke_user"))
    [first] = ctx.links.list_reviews()
    assert first["correlation_id"] == event.correlation_id
    again = _event()
    publish(app, again)  # the same leaver again: the same item, updated
    waiter(lambda: len(finished.outcomes("revocation.revoke_user")) == 2)

    [review] = ctx.links.list_reviews()
    assert review["id"] == first["id"] and ctx.links.get_review(review["id"]) == review
    assert review["upn"] == UPN and review["code"] == "CANNOT_DISABLE_LAST_ADMIN"
    assert review["correlation_id"] == again.correlation_id and review["created_at"] == first["created_at"]
    assert "last admin" in review["detail"]


def test_the_revoke_audit_record_names_the_upn(app, worker, ctx, graph, salesforce, finished, waiter):
    _leaver(graph, salesforce)
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    [record] = [r for r in audit_mod.recent(ctx.redis, 20) if r["action"] == "revoke"]
    assert record["upn"] == UPN


def test_the_pending_marker_is_cleared_when_the_task_starts_before_graph_is_read(
    app, worker, ctx, graph, salesforce, finished, waiter
):
    """A hint arriving while the task reads Graph must get a task of its own: the marker is gone by then."""
    from shared.dispatch import PendingWork

    _leaver(graph, salesforce)
    pending = PendingWork(ctx.redis)
    key = PendingWork.key("revocation.revoke_user", ENTRA_ID)
    seen_at_read: list[bool] = []
    real_get_user = graph.get_user

    def get_user(user_id: str, select: list[str] | None = None) -> Any:
        seen_at_read.append(ctx.redis.exists(key) == 1)
        return real_get_user(user_id, select)

    graph.get_user = get_user
    assert publish(app, _event(), pending=pending) == "revocation.revoke_user"
    waiter(lambda: finished.outcomes("revocation.revoke_user"))
    assert seen_at_read == [False]
    assert publish(app, _event(), pending=pending) == "revocation.revoke_user"  # not collapsed: nothing pending
