import time

import pytest

from shared.dispatch import (
    SYNC_TASK_FOR_KIND,
    TASK_FOR_KIND,
    TASK_NAMES,
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
    assert TASK_NAMES == {*TASK_FOR_KIND.values(), *SYNC_TASK_FOR_KIND.values()}
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
