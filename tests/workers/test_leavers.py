"""Leavers in depth on the revocation lane: leave of absence (freeze only), deactivation blockers named in plain
words with their fix, retried on a schedule and at once on request. Real Redis broker, in-process worker, fakes for
Graph and Salesforce."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from shared import audit as audit_mod
from shared import deactivation_retries, parking
from shared.dispatch import publish
from shared.errors import SERVICE_SALESFORCE, PermanentError
from shared.events import EventKind, EventSource, IdentityEvent
from shared.settings import Settings
from tests.workers.conftest import make_settings

ENTRA_ID = "0a1b2c3d-0000-4000-8000-0000000000a1"
UPN = "on.leave@contoso.com"
SF_ID = "005000000000009AAA"
MAPPING = """\
    offboarding:
      fallback_owner: admin@contoso.com
      leave_of_absence:
        groups: [Leave of Absence]
      objects:
        Opportunity: {rules: [manager, fallback]}
    """
BLOCKED = PermanentError("You cannot deactivate a user who is the default owner of leads", service=SERVICE_SALESFORCE,
                         status=400, code="FIELD_INTEGRITY_EXCEPTION")


@pytest.fixture
def settings(redis_server: Any, tmp_path: Any) -> Settings:
    path = tmp_path / "mapping.yaml"
    path.write_text(textwrap.dedent(MAPPING))
    return make_settings(redis_server.url, mapping_file=str(path), deactivation_retry_s=600)


def _event(kind: EventKind = EventKind.USER_DISABLED) -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant="t1", object_id=ENTRA_ID)


def _user(graph: Any, salesforce: Any, *, groups: tuple[str, ...] = ()) -> None:
    graph.add_user(ENTRA_ID, UPN, enabled=False)
    graph.groups_of[ENTRA_ID] = [{"id": f"g-{i}", "displayName": name} for i, name in enumerate(groups)]
    salesforce.add_user(SF_ID, UPN, federation_id=UPN)


def _parked_retries(redis: Any) -> list[parking.ParkedMessage]:
    return [m for m in parking.lease_due(redis, now=1e12, limit=100) if m.task == "revocation.retry_deactivation"]


def test_a_disabled_member_of_a_leave_of_absence_group_is_frozen_only(app, worker, ctx, graph, salesforce,
                                                                       finished, waiter) -> None:
    _user(graph, salesforce, groups=("All Employees", "leave of absence"))
    publish(app, _event())
    waiter(lambda: finished.outcomes("revocation.revoke_user"))

    assert finished.outcomes("revocation.revoke_user") == ["frozen_leave_of_absence"]
    assert [name for name, _ in salesforce.writes()] == ["freeze_user"]
    assert salesforce.frozen[SF_ID] is True and salesforce.users[SF_ID]["IsActive"] is True  # licence kept
    assert ctx.links.tombstone(ENTRA_ID) is not None  # a re-enable unfreezes through the usual reactivation
    assert finished.of("sync.transfer_ownership") == []  # nothing reassigned
    [revoke] = [r for r in audit_mod.recent(ctx.redis, 10) if r["action"] == "revoke"]
    assert revoke["outcome"] == "frozen_leave_of_absence"


def test_a_deleted_member_of_a_leave_of_absence_group_is_a_leaver(app, worker, ctx, graph, salesforce, finished,
                                                                   waiter) -> None:
    _user(graph, salesforce, groups=("Leave of Absence",))
    graph.soft_delete(ENTRA_ID)
    publish(app, _event(EventKind.USER_SOFT_DELETED))
    waiter(lambda: finished.outcomes("sync.transfer_ownership"))
    assert finished.outcomes("revocation.revoke_user") == ["revoked"]
    assert salesforce.users[SF_ID]["IsActive"] is False


def test_a_blocked_deactivation_names_the_blocker_and_its_fix_and_schedules_one_retry(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    _user(graph, salesforce)
    salesforce.fail("deactivate_user", BLOCKED, times=2)
    publish(app, _event())
    publish(app, _event(EventKind.USER_CHANGED))  # a duplicate hint: blocked again, no second retry
    waiter(lambda: len(finished.outcomes("revocation.revoke_user") + finished.outcomes("revocation.check_user")) == 2)

    assert salesforce.frozen[SF_ID] is True and salesforce.users[SF_ID]["IsActive"] is True
    [item] = ctx.links.list_reviews()
    assert (item["reason"], item["topic"], item["blocker"]) == ("deactivation_blocked", "deactivation",
                                                               "default_lead_owner")
    assert item["fix"] == "Setup > Lead Settings > Default Lead Owner: choose another user or a queue"
    assert "the user is the default owner of new leads" in item["detail"]
    assert "idsync review resolve ID --retry" in item["detail"]
    assert deactivation_retries.pending(ctx.redis, ENTRA_ID)
    [retry] = _parked_retries(ctx.redis)
    assert retry.queue == "revocation" and retry.args[0]["object_id"] == ENTRA_ID
    assert retry.due_at > retry.parked_at + 590  # IDSYNC_DEACTIVATION_RETRY_S


def test_once_the_blocker_is_gone_the_retry_deactivates_closes_the_item_and_runs_the_transfer(
        app, worker, ctx, graph, salesforce, finished, waiter) -> None:
    _user(graph, salesforce)
    salesforce.fail("deactivate_user", BLOCKED, times=2)
    publish(app, _event())
    waiter(lambda: ctx.links.list_reviews())
    waiter(lambda: finished.outcomes("sync.transfer_ownership"))

    publish(app, _event(), "revocation.retry_deactivation")  # what the schedule (or `review resolve --retry`) sends
    waiter(lambda: finished.outcomes("revocation.retry_deactivation"))
    assert finished.outcomes("revocation.retry_deactivation") == ["frozen_blocked"]  # still blocked: item stays
    assert len(ctx.links.list_reviews()) == 1

    publish(app, _event(), "revocation.retry_deactivation")  # the admin changed the default lead owner
    waiter(lambda: len(finished.outcomes("revocation.retry_deactivation")) == 2)
    assert finished.outcomes("revocation.retry_deactivation")[-1] == "revoked"
    assert salesforce.users[SF_ID]["IsActive"] is False
    assert ctx.links.list_reviews() == []
    waiter(lambda: len(finished.outcomes("sync.transfer_ownership")) == 2)  # the transfer ran again
    actions = [r["action"] for r in audit_mod.recent(ctx.redis, 50)]
    assert "review_resolved" in actions


def test_a_retry_for_a_user_enabled_meanwhile_closes_the_item_and_hands_to_sync(app, worker, ctx, graph, salesforce,
                                                                                 finished, waiter) -> None:
    _user(graph, salesforce)
    salesforce.fail("deactivate_user", BLOCKED)
    publish(app, _event())
    waiter(lambda: ctx.links.list_reviews())
    graph.enable(ENTRA_ID)
    publish(app, _event(), "revocation.retry_deactivation")
    waiter(lambda: finished.outcomes("revocation.retry_deactivation"))
    assert finished.outcomes("revocation.retry_deactivation") == ["handed_to_sync"]
    assert ctx.links.list_reviews() == []
    assert salesforce.users[SF_ID]["IsActive"] is True
