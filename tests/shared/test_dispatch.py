from shared.dispatch import TASK_FOR_KIND, lane_of, message_headers, publish
from shared.events import REVOCATION_KINDS, EventKind, EventSource, IdentityEvent


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send_task(self, name, args=None, kwargs=None, **options):
        self.sent.append((name, {"args": args, **options}))


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
