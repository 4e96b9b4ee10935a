import time

import fakeredis
import pytest
from structlog.testing import capture_logs

from shared.dispatch import (
    COLLAPSED,
    CONTACT_TASKS,
    PENDING_CLAIM_TTL_S,
    SCHEDULED_TASKS,
    SYNC_TASK_FOR_KIND,
    TASK_FOR_KIND,
    TASK_NAMES,
    PendingWork,
    UnknownTask,
    known_task,
    lane_of,
    message_headers,
    publish,
    republish,
)
from shared.events import REVOCATION_KINDS, EventKind, EventSource, IdentityEvent


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send_task(self, name, args=None, kwargs=None, **options):
        self.sent.append((name, {"args": args, "kwargs": kwargs, **options}))


def _event(kind: EventKind) -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant="t", object_id="u1")


def test_every_event_kind_has_a_task_on_a_lane():
    assert set(TASK_FOR_KIND) == set(EventKind)
    assert {lane_of(name) for name in TASK_FOR_KIND.values()} == {"revocation", "sync"}


def test_disables_and_deletes_take_the_revocation_lane_and_reenables_the_sync_lane():
    assert all(lane_of(TASK_FOR_KIND[k]) == "revocation" for k in REVOCATION_KINDS)
    assert lane_of(TASK_FOR_KIND[EventKind.USER_ENABLED]) == "sync"
    assert lane_of(TASK_FOR_KIND[EventKind.OWNERSHIP_TRANSFER]) == "sync"


def test_publish_sends_the_event_to_its_lane_with_correlation_headers():
    sender, event = Recorder(), _event(EventKind.USER_DISABLED)
    assert publish(sender, event) == "revocation.revoke_user"
    name, options = sender.sent[0]
    assert options["queue"] == "revocation" and options["args"] == [event.to_message()]
    assert options["headers"]["idsync_correlation_id"] == event.correlation_id
    assert options["headers"]["event_id"] == event.id
    assert float(options["headers"]["published_at"]) > 0


def test_headers_avoid_the_name_celery_reserves_for_its_own_correlation_id():
    assert "correlation_id" not in message_headers(_event(EventKind.USER_CHANGED))


def test_events_round_trip_through_a_json_message():
    event = _event(EventKind.USER_SOFT_DELETED)
    assert IdentityEvent.from_message(event.to_message()) == event


def test_every_task_a_message_may_name_is_in_the_table_and_hand_offs_to_sync_stay_on_the_sync_lane():
    assert TASK_NAMES == {*TASK_FOR_KIND.values(), *SYNC_TASK_FOR_KIND.values(), *SCHEDULED_TASKS, *CONTACT_TASKS}
    assert {lane_of(name) for name in SCHEDULED_TASKS} == {"revocation"}  # a blocked deactivation's retry
    assert {lane_of(name) for name in CONTACT_TASKS} == {"sync"}
    assert {lane_of(name) for name in SYNC_TASK_FOR_KIND.values()} == {"sync"}
    assert known_task("sync.user_changed") == "sync.user_changed"
    with pytest.raises(UnknownTask, match="sync.user_chnaged"):
        known_task("sync.user_chnaged")


def test_republish_keeps_the_message_and_stamps_a_fresh_publish_time():
    sender = Recorder()
    before = time.time()
    name = republish(sender, "sync.user_changed", [{"id": "e"}], {"k": 1}, {"event_id": "e", "published_at": "1.0"},
                     task_id="t1", retries=4)
    assert name == "sync.user_changed"
    [(sent_name, options)] = sender.sent
    assert sent_name == "sync.user_changed" and options["args"] == [{"id": "e"}] and options["queue"] == "sync"
    assert options["kwargs"] == {"k": 1} and options["task_id"] == "t1" and options["retries"] == 4
    assert options["headers"]["event_id"] == "e"
    assert float(options["headers"]["published_at"]) >= before - 0.001  # stamped to the millisecond


def test_republish_refuses_a_task_outside_the_table_before_sending():
    sender = Recorder()
    with pytest.raises(UnknownTask):
        republish(sender, "revocation.nope", [], {}, {}, task_id="t1")
    assert sender.sent == []
# --- collapsing duplicate pending work on the revocation lane


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FailingSender:
    def send_task(self, name, args=None, kwargs=None, **options):
        raise ConnectionError("broker down")


def _user_event(kind: EventKind, object_id: str = "u1") -> IdentityEvent:
    return IdentityEvent(kind=kind, source=EventSource.WEBHOOK, tenant="t", object_id=object_id)


def test_a_second_hint_for_a_user_with_a_pending_revocation_task_is_collapsed_not_enqueued():
    redis, sender = fakeredis.FakeRedis(decode_responses=True), Recorder()
    pending = PendingWork(redis)
    assert publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending) == "revocation.check_user"
    assert publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending) == COLLAPSED
    assert publish(sender, _user_event(EventKind.USER_CHANGED, "u2"), pending=pending) == "revocation.check_user"
    assert [name for name, _ in sender.sent] == ["revocation.check_user", "revocation.check_user"]


def test_the_marker_names_the_message_it_stands_for_and_lives_until_the_task_starts():
    redis, sender = fakeredis.FakeRedis(decode_responses=True), Recorder()
    publish(sender, _user_event(EventKind.USER_DISABLED), pending=PendingWork(redis, ttl_s=600))
    key = PendingWork.key("revocation.revoke_user", "u1")
    marker = redis.get(key)
    assert isinstance(marker, str) and marker.split(" ")[0] == sender.sent[0][1]["task_id"]
    assert 590 < redis.ttl(key) <= 600  # confirmed after the send: the short claim TTL was extended


def test_once_the_task_started_a_new_hint_gets_a_task_of_its_own():
    redis, sender = fakeredis.FakeRedis(decode_responses=True), Recorder()
    pending = PendingWork(redis)
    publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending)
    pending.clear("revocation.check_user", "u1")  # what the worker does first, before reading Graph
    assert publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending) == "revocation.check_user"
    assert len(sender.sent) == 2


def test_sync_hints_about_a_user_are_coalesced_in_the_backlog_with_one_drain_task():
    from shared.dirty_users import DirtyUsers

    redis, sender = fakeredis.FakeRedis(decode_responses=True), Recorder()
    pending = PendingWork(redis)
    first, second = _user_event(EventKind.USER_ENABLED), _user_event(EventKind.USER_CHANGED)
    for _ in range(3):
        assert publish(sender, first, pending=pending) == "sync.reactivate_user"
    assert publish(sender, second, "sync.user_changed", pending=pending) == "sync.user_changed"
    assert [name for name, _options in sender.sent] == ["sync.drain_users"]  # one drain, no per-hint message
    assert redis.keys("idsync:pending:*") == []
    claimed = DirtyUsers(redis).claim(10, lease_s=60)
    assert [c.entra_id for c in claimed] == [first.object_id]  # the same user, once
    assert claimed[0].observed_at == max(first.observed_at.timestamp(), second.observed_at.timestamp())


def test_a_new_drain_is_scheduled_once_the_last_one_has_started():
    from shared.dirty_users import DirtyUsers

    redis, sender = fakeredis.FakeRedis(decode_responses=True), Recorder()
    pending = PendingWork(redis)
    publish(sender, _user_event(EventKind.USER_ENABLED), pending=pending)
    DirtyUsers(redis).drain_started()
    publish(sender, _user_event(EventKind.USER_ENABLED), pending=pending)
    assert [name for name, _options in sender.sent] == ["sync.drain_users", "sync.drain_users"]


def test_without_a_pending_store_every_hint_is_enqueued():
    sender = Recorder()
    for _ in range(3):
        publish(sender, _user_event(EventKind.USER_CHANGED))
    assert len(sender.sent) == 3


def test_a_failed_send_undoes_its_claim_so_the_retry_is_not_collapsed():
    redis = fakeredis.FakeRedis(decode_responses=True)
    pending = PendingWork(redis)
    with pytest.raises(ConnectionError):
        publish(FailingSender(), _user_event(EventKind.USER_DISABLED), pending=pending)
    assert redis.get(PendingWork.key("revocation.revoke_user", "u1")) is None
    sender = Recorder()
    assert publish(sender, _user_event(EventKind.USER_DISABLED), pending=pending) == "revocation.revoke_user"


def test_an_unconfirmed_claim_expires_on_its_own_within_seconds():
    redis = fakeredis.FakeRedis(decode_responses=True)
    PendingWork(redis).claim("revocation.revoke_user", "u1", "m1")
    assert 0 < redis.ttl(PendingWork.key("revocation.revoke_user", "u1")) <= PENDING_CLAIM_TTL_S


def test_a_stale_marker_of_a_lost_message_stops_suppressing_and_says_so():
    redis, sender, clock = fakeredis.FakeRedis(decode_responses=True), Recorder(), Clock()
    pending = PendingWork(redis, stale_after_s=120, clock=clock)
    publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending)  # ...and this message is then lost
    clock.now += 60
    assert publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending) == COLLAPSED
    clock.now += 61
    with capture_logs() as logs:
        assert publish(sender, _user_event(EventKind.USER_CHANGED), pending=pending) == "revocation.check_user"
    [warning] = [e for e in logs if e["event"] == "dispatch_pending_marker_stale"]
    assert warning["pending_task_id"] == sender.sent[0][1]["task_id"] and warning["age_s"] == 121.0
    assert len(sender.sent) == 2


def test_a_marker_that_vanished_between_claim_and_read_still_collapses():
    """The pending task started (and cleared the marker before reading Graph) while we looked: its read covers us."""

    class VanishingRedis:
        def set(self, *args, **kwargs):
            return None

        def get(self, key):
            return None

    assert PendingWork(VanishingRedis()).claim("revocation.check_user", "u1", "m2") is None
