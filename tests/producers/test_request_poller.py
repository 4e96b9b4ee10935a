"""The request poller: approved requests become events, and the watermark moves only after they are enqueued."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from producers.request_poller import RequestPoller
from shared.mapping import parse_mapping_text
from shared.user_requests.watermark import RequestWatermark, parse_stamp

MAPPING = parse_mapping_text("requests: {enabled: true, lookback_s: 60, poll_interval_s: 5}\n", "m.yaml")


class Org:
    """Answers the poller's query with the Approved rows stamped at or after the query's lower bound."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[str] = []

    def query_all(self, soql: str) -> list[dict[str, Any]]:
        self.queries.append(soql)
        lower = soql.split("SystemModstamp >= ")[1].split()[0] if "SystemModstamp >=" in soql else None
        return [r for r in self.rows if lower is None or parse_stamp(r["SystemModstamp"]) >= parse_stamp(lower)]


class Broker:
    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail_after = fail_after

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("broker down")
        self.sent.append((name, args[0]))


def _rows(*stamps: str) -> list[dict[str, Any]]:
    return [{"Id": f"a0Y{n}", "SystemModstamp": s} for n, s in enumerate(stamps, 1)]


def _poller(org: Org, broker: Broker, redis: Any) -> RequestPoller:
    return RequestPoller(org, broker, redis, "tenant", lambda: MAPPING)


def test_each_approved_request_becomes_one_event_and_the_overlap_does_not_repeat_it():
    redis = fakeredis.FakeRedis(decode_responses=True)
    org, broker = Org(_rows("2026-05-01T10:00:00.000+0000", "2026-05-01T10:00:01.000+0000")), Broker()
    poller = _poller(org, broker, redis)
    assert MAPPING.requests is not None
    first = poller.run_round(MAPPING.requests)
    assert (first.seen, first.published) == (2, 2)
    assert [(name, msg["kind"], msg["object_id"]) for name, msg in broker.sent] == [
        ("sync.provision_request", "request.approved", "a0Y1"), ("sync.provision_request", "request.approved", "a0Y2")]
    assert "Status__c = 'Approved'" in org.queries[0] and "SystemModstamp >=" not in org.queries[0]

    again = poller.run_round(MAPPING.requests)  # the lookback re-reads both: same versions, nothing sent
    assert (again.seen, again.published, again.skipped) == (2, 0, 2)
    assert "SystemModstamp >= 2026-05-01T09:59:01.000Z" in org.queries[1]

    org.rows[0]["SystemModstamp"] = "2026-05-01T10:07:00.000+0000"  # approved again after a failure
    assert poller.run_round(MAPPING.requests).published == 1
    assert RequestWatermark(redis).get() == parse_stamp("2026-05-01T10:07:00Z")


def test_the_watermark_stays_when_the_broker_fails_mid_round():
    redis = fakeredis.FakeRedis(decode_responses=True)
    org = Org(_rows("2026-05-01T10:00:00.000+0000", "2026-05-01T10:00:01.000+0000"))
    poller = _poller(org, Broker(fail_after=1), redis)
    assert MAPPING.requests is not None
    with pytest.raises(ConnectionError):
        poller.run_round(MAPPING.requests)
    assert RequestWatermark(redis).get() is None  # the next round asks for the same requests again
    retry = _poller(org, Broker(), redis).run_round(MAPPING.requests)
    assert (retry.published, retry.skipped) == (1, 1)  # the one already in the broker is not sent twice


def test_the_poller_is_idle_unless_the_mapping_enables_requests():
    off = parse_mapping_text("requests: {enabled: false}\n", "m.yaml")
    poller = RequestPoller(Org([]), Broker(), fakeredis.FakeRedis(decode_responses=True), "t", lambda: off)
    assert poller.spec() is None
    assert RequestPoller(Org([]), Broker(), None, "t", lambda: parse_mapping_text("{}\n", "m.yaml")).spec() is None
