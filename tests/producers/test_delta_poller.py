from __future__ import annotations

import threading
import time
from urllib.parse import unquote

import pytest
from kombu.exceptions import OperationalError
from structlog.testing import capture_logs

from producers.checkpoints import DeltaCheckpoints
from producers.delta_poller import USER_SELECT, DeltaPoller, link_matches_base, user_event_kind
from producers.poller_lease import LeaseLost, PollerBusy, PollerLease
from shared.errors import DeltaExpired, GraphThrottled, TransportError
from shared.events import EventKind
from tests.producers.fakes import GRAPH, TENANT, BreakingSender, FakeGraph, page, queued, user

NEXT = f"{GRAPH}/users/delta?$skiptoken=p2"
DELTA1 = f"{GRAPH}/users/delta?$deltatoken=d1"
DELTA2 = f"{GRAPH}/users/delta?$deltatoken=d2"


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


@pytest.fixture
def checkpoints(redis_client) -> DeltaCheckpoints:
    return DeltaCheckpoints(redis_client, TENANT)


def kinds(redis_client, queue: str) -> list[tuple[str, str]]:
    return [(m["event"]["object_id"], m["event"]["kind"]) for m in queued(redis_client, queue)]


def dirty(redis_client) -> list[str]:
    """Users in the sync backlog: hints about enabled users are coalesced there, with one drain message."""
    from shared.dirty_users import DIRTY_KEY

    return sorted(str(m) for m in redis_client.zrange(DIRTY_KEY, 0, -1))


DRAIN = [("backlog", "sync.backlog")]


def test_first_round_enumerates_everyone_with_accountenabled_selected_and_saves_the_link(
    graph, celery_app, redis_client, settings, checkpoints
):
    graph.script("users", None, [
        page([user("u1", accountEnabled=True), user("u2", accountEnabled=False)], next_link=NEXT),
        page([user("u3", accountEnabled=True)], delta_link=DELTA1),
    ])
    result = DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert graph.delta_calls == [("users", None, USER_SELECT)]
    assert "accountEnabled" in USER_SELECT
    assert (result.pages, result.items, result.events) == (2, 3, 3)
    # Delta says who is enabled: those go straight to sync, only the disable takes the revocation lane.
    assert kinds(redis_client, "revocation") == [("u2", "user.disabled")]
    assert kinds(redis_client, "sync") == DRAIN and dirty(redis_client) == ["u1", "u3"]
    assert checkpoints.get("users") == DELTA1
    assert checkpoints.last_round("users")["events"] == 3


def test_a_disabled_user_goes_to_the_revocation_lane_as_user_disabled(
    graph, celery_app, redis_client, settings, checkpoints
):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([user("u9", accountEnabled=False, displayName="Leaver")],
                                        delta_link=DELTA2)])
    DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    [message] = queued(redis_client, "revocation")
    assert message["event"]["kind"] == "user.disabled"
    assert message["headers"]["task"] == "revocation.revoke_user"
    assert graph.delta_calls == [("users", DELTA1, None)]  # the token carries $select; it is not repeated
    assert checkpoints.get("users") == DELTA2


def test_an_enabled_guest_goes_to_their_crm_contact_and_a_disabled_one_to_the_revocation_lane(
    graph, celery_app, redis_client, settings, checkpoints
):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([
        user("g1", accountEnabled=True, userType="Guest", externalUserState="Accepted"),
        user("g2", accountEnabled=False, userType="Guest"),
        user("m1", accountEnabled=True, userType="Member"),
    ], delta_link=DELTA2)])
    DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    tasks = {m["event"]["object_id"]: m["headers"]["task"] for q in ("sync", "revocation")
             for m in queued(redis_client, q)}
    # a guest goes to their Contact, a disabled one to revocation, a member to the sync backlog (one drain message)
    assert tasks == {"g1": "sync.contact_changed", "g2": "revocation.revoke_user", "backlog": "sync.drain_users"}
    assert dirty(redis_client) == ["m1"]


def test_removed_users_map_to_soft_and_hard_deletes():
    assert user_event_kind({"id": "a", "@removed": {"reason": "changed"}}) is EventKind.USER_SOFT_DELETED
    assert user_event_kind({"id": "a", "@removed": {"reason": "deleted"}}) is EventKind.USER_HARD_DELETED
    assert user_event_kind({"id": "a", "accountEnabled": True}) is EventKind.USER_CHANGED
    assert user_event_kind({"id": "a", "displayName": "x"}) is EventKind.USER_CHANGED


def test_a_user_restored_from_deleted_items_is_sent_for_reactivation_and_a_disabled_one_for_revocation(
    graph, celery_app, redis_client, settings, checkpoints
):
    """A restore shows up in delta as the user again, without @removed: enabled -> the sync lane, which reactivates
    and unfreezes what idsync revoked at the soft delete; restored while disabled -> the revocation lane."""
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([user("u5", **{"@removed": {"reason": "changed"}}),
                                         user("u6", **{"@removed": {"reason": "changed"}})], delta_link=DELTA2)])
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    poller.run_round("users")
    assert kinds(redis_client, "revocation") == [("u5", "user.soft_deleted"), ("u6", "user.soft_deleted")]
    redis_client.delete("revocation", *redis_client.keys("idsync:pending:*"))  # the revocations ran

    graph.script("users", DELTA2, [page([user("u5", accountEnabled=True), user("u6", accountEnabled=False)],
                                        delta_link=f"{GRAPH}/users/delta?$deltatoken=d3")])
    poller.run_round("users")
    assert kinds(redis_client, "sync") == DRAIN and dirty(redis_client) == ["u5"]  # restored: planned again
    assert [(m["event"]["object_id"], m["headers"]["task"]) for m in queued(redis_client, "revocation")] == [
        ("u6", "revocation.revoke_user")]


def test_duplicates_in_a_round_collapse_and_an_earlier_disable_is_not_forgotten(
    graph, celery_app, redis_client, settings
):
    graph.script("users", None, [
        page([user("u1", accountEnabled=False, displayName="A"), user("u2", displayName="B")], next_link=NEXT),
        page([user("u1", displayName="A2"), user("u2", displayName="B2")], delta_link=DELTA1),
    ])
    result = DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert (result.items, result.duplicates, result.events) == (4, 2, 2)
    assert kinds(redis_client, "revocation") == [("u1", "user.disabled"), ("u2", "user.changed")]


def test_a_removal_later_in_the_round_wins_over_an_earlier_update(graph, celery_app, redis_client, settings):
    graph.script("users", None, [
        page([user("u1", accountEnabled=True)], next_link=NEXT),
        page([{"id": "u1", "@removed": {"reason": "deleted"}}], delta_link=DELTA1),
    ])
    DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert kinds(redis_client, "revocation") == [("u1", "user.hard_deleted")]


def test_group_member_slices_across_pages_are_merged_into_one_group_event(
    graph, celery_app, redis_client, settings
):
    graph.script("groups", None, [
        page([{"id": "g1", "displayName": "Sales", "members@delta": [{"id": "m1"}, {"id": "m2"}]}], next_link="n"),
        page([{"id": "g1", "displayName": "Sales", "members@delta": [
            {"id": "m2", "@removed": {"reason": "deleted"}}, {"id": "m3"}]}], delta_link="d"),
    ])
    result = DeltaPoller(graph, celery_app, redis_client, settings).run_round("groups")
    assert kinds(redis_client, "sync") == [("g1", "group.changed")]
    assert result.members["g1"] == {"added": {"m1", "m3"}, "removed": {"m2"}}


def test_a_publish_failure_mid_round_leaves_the_checkpoint_and_the_retry_sends_only_the_rest(
    graph, celery_app, redis_client, settings, checkpoints
):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([user("u1", accountEnabled=False), user("u2", accountEnabled=False),
                                         user("u3", accountEnabled=False)], delta_link=DELTA2)])
    with pytest.raises(OperationalError):
        DeltaPoller(graph, BreakingSender(celery_app, ok=2), redis_client, settings).run_round("users")
    assert checkpoints.get("users") == DELTA1
    assert [o for o, _ in kinds(redis_client, "revocation")] == ["u1", "u2"]

    result = DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert (result.events, result.skipped) == (1, 2)
    assert [o for o, _ in kinds(redis_client, "revocation")] == ["u1", "u2", "u3"]
    assert checkpoints.get("users") == DELTA2


def test_a_changed_object_is_sent_again_when_a_failed_round_is_retried(
    graph, celery_app, redis_client, settings, checkpoints
):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([user("u1", accountEnabled=True), user("u2")], delta_link=DELTA2)])
    with pytest.raises(OperationalError):
        DeltaPoller(graph, BreakingSender(celery_app, ok=1), redis_client, settings).run_round("users")
    graph.script("users", DELTA1, [page([user("u1", accountEnabled=False), user("u2")], delta_link=DELTA2)])
    DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert kinds(redis_client, "sync") == DRAIN and dirty(redis_client) == ["u1"]
    assert kinds(redis_client, "revocation") == [("u1", "user.disabled"), ("u2", "user.changed")]


def test_a_graph_failure_mid_round_publishes_nothing_and_keeps_the_checkpoint(
    graph, celery_app, redis_client, settings, checkpoints
):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([user("u1", accountEnabled=False)], next_link=NEXT),
                                   GraphThrottled("slow down", service="graph", status=429, retry_after=2)])
    with pytest.raises(GraphThrottled):
        DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert checkpoints.get("users") == DELTA1
    assert redis_client.llen("revocation") == 0


def test_410_clears_the_checkpoint_and_resyncs_from_the_location_url(
    graph, celery_app, redis_client, settings, checkpoints
):
    location = f"{GRAPH}/users/delta?$select=id,accountEnabled,displayName&$deltatoken="
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [DeltaExpired("gone", service="graph", status=410, location=location)])
    graph.script("users", location, [page([user("u1", accountEnabled=True), user("u2", accountEnabled=False)],
                                          delta_link=DELTA2)])
    result = DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert result.resynced
    assert [c[1] for c in graph.delta_calls] == [DELTA1, location]
    assert kinds(redis_client, "revocation") == [("u2", "user.disabled")]
    assert kinds(redis_client, "sync") == DRAIN and dirty(redis_client) == ["u1"]
    assert checkpoints.get("users") == DELTA2
    assert checkpoints.last_round("users")["resyncs"] == 1


def test_410_without_a_usable_location_resyncs_from_the_initial_request(
    graph, celery_app, redis_client, settings, checkpoints
):
    checkpoints.save("users", DELTA1)
    no_select = f"{GRAPH}/users/delta?$deltatoken="
    graph.script("users", DELTA1, [DeltaExpired("gone", service="graph", status=410, location=no_select)])
    graph.script("users", None, [page([user("u1", accountEnabled=True)], delta_link=DELTA2)])
    DeltaPoller(graph, celery_app, redis_client, settings).run_round("users")
    assert graph.delta_calls[-1] == ("users", None, USER_SELECT)
    assert checkpoints.get("users") == DELTA2


def test_starting_from_now_fetches_a_latest_link_and_emits_nothing(
    graph, celery_app, redis_client, settings, checkpoints
):
    poller = DeltaPoller(graph, celery_app, redis_client, settings, start_from_now=True)
    latest = poller.latest_link("users")
    assert "$deltatoken=latest" in latest and "accountEnabled" in unquote(latest)
    graph.script("users", latest, [page([], delta_link=DELTA1)])
    result = poller.run_round("users")
    assert result.from_now and result.events == 0
    assert checkpoints.get("users") == DELTA1
    assert redis_client.llen("revocation") == 0


def test_run_forever_polls_users_then_groups_and_survives_errors(graph, celery_app, redis_client, settings):
    graph.script("users", None, [RuntimeError("graph exploded")])
    graph.script("groups", None, [page([{"id": "g1", "displayName": "G"}], delta_link="d")])
    graph.script("groups", "d", [page([], delta_link="d")])
    stop = threading.Event()
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    thread = threading.Thread(target=poller.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if len([c for c in graph.delta_calls if c[0] == "users"]) >= 2:
                break
            stop.wait(0.02)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert [c[0] for c in graph.delta_calls[:2]] == ["users", "groups"]
    assert len([c for c in graph.delta_calls if c[0] == "users"]) >= 2
    assert kinds(redis_client, "sync") == [("g1", "group.changed")]


def test_users_missing_from_a_resync_are_sent_for_revocation_as_deleted_unseen(
    graph, celery_app, redis_client, settings, checkpoints
):
    graph.script("users", None, [page([user("u1", accountEnabled=True), user("u2", accountEnabled=True),
                                        user("u3", accountEnabled=True)], delta_link=DELTA1)])
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    poller.run_round("users")
    assert checkpoints.known_count("users") == 3
    location = f"{GRAPH}/users/delta?$select=id,accountEnabled&$deltatoken="
    graph.script("users", DELTA1, [DeltaExpired("gone", service="graph", status=410, location=location)])
    # u2 was hard-deleted while the token was expired: the resync simply no longer lists it.
    graph.script("users", location, [page([user("u1", accountEnabled=True), user("u3", accountEnabled=True)],
                                          delta_link=DELTA2)])

    result = poller.run_round("users")

    assert result.resynced and result.vanished == 1
    assert ("u2", "user.hard_deleted") in kinds(redis_client, "revocation")
    assert checkpoints.known_count("users") == 2
    assert checkpoints.get("users") == DELTA2


def test_incremental_rounds_keep_the_known_users_current(graph, celery_app, redis_client, settings, checkpoints):
    graph.script("users", None, [page([user("u1", accountEnabled=True)], delta_link=DELTA1)])
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    poller.run_round("users")
    graph.script("users", DELTA1, [page([user("u2", accountEnabled=True),
                                         {"id": "u1", "@removed": {"reason": "deleted"}}], delta_link=DELTA2)])
    result = poller.run_round("users")
    assert result.vanished == 0 and checkpoints.known_count("users") == 1
    assert ("u1", "user.hard_deleted") in kinds(redis_client, "revocation")  # reported by delta itself


# --- a stored link that points at another Graph base (the sandbox restarted on another port)


@pytest.mark.parametrize(("link", "same"), [
    (f"{GRAPH}/users/delta?$deltatoken=x", True),
    ("https://GRAPH.test:443/v1.0/users/delta?$deltatoken=x", True),
    ("users/delta?$deltatoken=x", True),  # relative: the client resolves it against the configured URL
    ("https://graph.test:8443/v1.0/users/delta?$deltatoken=x", False),
    ("http://graph.test/v1.0/users/delta?$deltatoken=x", False),
    ("https://other.test/v1.0/users/delta?$deltatoken=x", False),
    ("https://graph.test/beta/users/delta?$deltatoken=x", False),
    ("https://graph.test/v1.0evil/users/delta", False),
    ("https://graph.test:99999/v1.0/users/delta", False),
])
def test_a_link_matches_the_configured_graph_url_only_on_scheme_host_port_and_path(link, same):
    assert link_matches_base(link, GRAPH) is same


def test_a_stored_link_on_another_port_is_discarded_for_a_full_resync_logged_once(
    graph, celery_app, redis_client, settings, checkpoints
):
    graph.script("users", None, [page([user("u1", accountEnabled=True), user("u2", accountEnabled=True)],
                                      delta_link=DELTA1)])
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    poller.run_round("users")
    moved = "https://graph.test:8443/v1.0/users/delta?$deltatoken=secret-token"
    checkpoints.save("users", moved)  # a previous run's sandbox listened on another port
    # u2 left while the link pointed nowhere: the full resync's vanished-users check must catch it.
    graph.script("users", None, [page([user("u1", accountEnabled=True)], delta_link=DELTA2)])
    graph.script("users", DELTA2, [page([], delta_link=DELTA2)])

    with capture_logs() as logs:
        result = poller.run_round("users")
        poller.run_round("users")

    assert result.resynced and result.vanished == 1
    assert graph.delta_calls[-2:] == [("users", None, USER_SELECT), ("users", DELTA2, None)]
    assert moved not in [call[1] for call in graph.delta_calls]  # never sent the token to the old address
    assert ("u2", "user.hard_deleted") in kinds(redis_client, "revocation")
    assert checkpoints.get("users") == DELTA2 and checkpoints.resync_pending("users") is None
    changed = [e for e in logs if e["event"] == "delta_link_base_changed"]
    assert len(changed) == 1
    assert changed[0]["stored_base"] == "https://graph.test:8443" and "secret-token" not in repr(logs)
    assert checkpoints.outcome("users")["consecutive_failures"] == 0


# --- a resync stays pending until its new link is saved


def test_after_a_410_a_failed_resync_is_retried_as_a_full_resync_even_when_starting_from_now(
    graph, celery_app, redis_client, settings, checkpoints
):
    graph.script("users", None, [page([user("u1", accountEnabled=True), user("u2", accountEnabled=True)],
                                      delta_link=DELTA1)])
    poller = DeltaPoller(graph, celery_app, redis_client, settings, start_from_now=True)
    poller.run_round("users", from_now=False)
    location = f"{GRAPH}/users/delta?$select=id,accountEnabled&$deltatoken="
    graph.script("users", DELTA1, [DeltaExpired("gone", service="graph", status=410, location=location)])
    graph.script("users", location, [page([user("u1", accountEnabled=True)], next_link=NEXT),
                                     TransportError("connection failed: ReadError", service="graph")])
    with pytest.raises(TransportError):
        poller.run_round("users")
    assert checkpoints.get("users") is None and checkpoints.resync_pending("users")["reason"] == "expired"

    # u2 was deleted meanwhile; the retry must enumerate everyone (not "from now") and notice it.
    graph.script("users", None, [page([user("u1", accountEnabled=True)], delta_link=DELTA2)])
    result = poller.run_round("users")

    assert graph.delta_calls[-1] == ("users", None, USER_SELECT)
    assert result.resynced and not result.from_now and result.vanished == 1
    assert ("u2", "user.hard_deleted") in kinds(redis_client, "revocation")
    assert checkpoints.get("users") == DELTA2 and checkpoints.resync_pending("users") is None
    assert checkpoints.last_round("users")["resyncs"] == 1


# --- round outcomes and how failures are logged


def test_each_round_records_its_outcome_for_health_and_status(graph, celery_app, redis_client, settings, checkpoints):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [TransportError("connection failed: ConnectError", service="graph")])
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    for _ in range(2):
        with pytest.raises(TransportError):
            poller.run_round("users")
    outcome = checkpoints.outcome("users")
    assert outcome["consecutive_failures"] == 2 and outcome["last_success"] is None
    assert outcome["last_error"]["class"] == "TransportError"
    assert "connection failed" in outcome["last_error"]["message"]
    graph.script("users", DELTA1, [page([], delta_link=DELTA2)])
    poller.run_round("users")
    outcome = checkpoints.outcome("users")
    assert outcome["consecutive_failures"] == 0 and outcome["last_success"] is not None


@pytest.mark.parametrize(("error", "logged"), [
    (TransportError("connection failed: ConnectError", service="graph"), "delta_round_failed_retrying"),
    (GraphThrottled("slow down", service="graph", status=429, retry_after=0.5), "delta_round_throttled"),
])
def test_only_throttling_is_logged_as_throttled(graph, celery_app, redis_client, settings, error, logged):
    graph.script("users", None, [error])
    poller = DeltaPoller(graph, celery_app, redis_client, settings)
    with capture_logs() as logs:
        poller._cycle(threading.Event(), settings.delta_interval_s)
    [entry] = [e for e in logs if e["event"].startswith("delta_round_")]
    assert entry["event"] == logged
    assert entry["error"] == type(error).__name__


# --- one poller per tenant


class SlowGraph(FakeGraph):
    """Every delta round takes `delay` seconds: longer than the test lease, so only renewal keeps it."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        for resource in ("users", "groups"):
            self.script(resource, None, [page([], delta_link=f"{GRAPH}/{resource}/delta?$deltatoken=1")])
            self.script(resource, f"{GRAPH}/{resource}/delta?$deltatoken=1",
                        [page([], delta_link=f"{GRAPH}/{resource}/delta?$deltatoken=1")])

    def delta_pages(self, resource, link, select=None):
        time.sleep(self.delay)
        yield from super().delta_pages(resource, link, select)


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_second_poller_stands_by_while_the_first_holds_the_lease_through_a_long_round_then_takes_over(
    celery_app, redis_client, settings
):
    lease_s = 0.6
    first_graph, second_graph = SlowGraph(delay=1.0), SlowGraph(delay=0.0)
    first = DeltaPoller(first_graph, celery_app, redis_client, settings, lease_s=lease_s)
    second = DeltaPoller(second_graph, celery_app, redis_client, settings, lease_s=lease_s)
    stop_first, stop_second = threading.Event(), threading.Event()
    threads = [threading.Thread(target=first.run_forever, args=(stop_first,), daemon=True),
               threading.Thread(target=second.run_forever, args=(stop_second,), daemon=True)]
    with capture_logs() as logs:
        threads[0].start()
        try:
            assert _wait(lambda: first_graph.delta_calls)
            threads[1].start()
            # Three lease periods of slow rounds: the lease is renewed, the standby never polls.
            time.sleep(3 * lease_s + 0.5)
            assert second_graph.delta_calls == []
            assert len(first_graph.delta_calls) >= 2
            stop_first.set()
            threads[0].join(timeout=10)
            assert not threads[0].is_alive()
            assert _wait(lambda: second_graph.delta_calls), "the standby never took over"
        finally:
            stop_first.set()
            stop_second.set()
            for thread in threads:
                thread.join(timeout=10)
    standby = [e for e in logs if e["event"] == "delta_poller_standby"]
    assert len(standby) == 1 and standby[0]["holder"].count(":") == 2
    assert [e["took_over"] for e in logs if e["event"] == "delta_poller_active"] == [False, True]


def test_a_poller_that_lost_its_lease_saves_nothing(graph, celery_app, redis_client, settings, checkpoints):
    checkpoints.save("users", DELTA1)
    graph.script("users", DELTA1, [page([user("u1", accountEnabled=False)], delta_link=DELTA2)])
    lease = PollerLease(redis_client, TENANT, lease_s=0.3)
    assert lease.acquire()
    try:
        redis_client.delete(lease.key)  # expired during a pause; another replica may have it now
        assert _wait(lambda: not lease.held())
        poller = DeltaPoller(graph, celery_app, redis_client, settings)
        poller.lease = lease
        with pytest.raises(LeaseLost):
            poller.run_round("users")
    finally:
        lease.release()
    assert checkpoints.get("users") == DELTA1


def test_poll_once_refuses_to_run_beside_a_polling_replica_and_names_it(graph, celery_app, redis_client, settings):
    holder = PollerLease(redis_client, TENANT)
    assert holder.acquire()
    try:
        with pytest.raises(PollerBusy) as busy:
            DeltaPoller(graph, celery_app, redis_client, settings).run_once()
        assert busy.value.holder == redis_client.get(holder.key)
    finally:
        holder.release()
    graph.script("users", None, [page([], delta_link=DELTA1)])
    graph.script("groups", None, [page([], delta_link="g1")])
    results = DeltaPoller(graph, celery_app, redis_client, settings).run_once()
    assert [r.resource for r in results] == ["users", "groups"]
    assert redis_client.get(holder.key) is None  # released after the run
