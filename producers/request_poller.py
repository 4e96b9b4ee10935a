"""The request poller: approved `User_Provisioning_Request__c` records become `request.approved` events.

Salesforce does not push changes of this object to us, so the poller asks every `requests.poll_interval_s`:
    SELECT Id, SystemModstamp FROM User_Provisioning_Request__c
    WHERE Status__c = 'Approved' AND SystemModstamp >= <watermark - lookback> ORDER BY SystemModstamp, Id
publishes one event per request version it has not published yet, and only then saves the watermark
(`shared.user_requests.watermark`). A crash between publishing and saving means the round is asked again and the
same requests are published again: harmless, because the worker keys everything on the request Id (a Completed
request is left alone). It runs only when the mapping says `requests: {enabled: true}`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.dispatch import TaskSender, publish
from shared.errors import IdsyncError
from shared.events import EventKind, EventSource, IdentityEvent
from shared.logging import get_logger
from shared.mapping.model import Mapping
from shared.mapping.user_requests import RequestsSpec
from shared.user_requests.record import APPROVED, OBJECT
from shared.user_requests.watermark import RequestWatermark, parse_stamp, soql_datetime

log = get_logger("idsync.request_poller")

STATUS_KEY = "idsync:requests:poller"
#: After an unexpected error the loop waits at most this long before trying again.
ERROR_BACKOFF_S = 30.0


@dataclass
class RoundResult:
    seen: int = 0  # Approved requests in the window
    published: int = 0
    skipped: int = 0  # already published at the same stamp (the overlap)


class RequestPoller:
    def __init__(self, salesforce: Any, sender: TaskSender, redis: Any, tenant: str,
                 mapping: Callable[[], Mapping], *, clock: Callable[[], float] = time.time) -> None:
        self.salesforce = salesforce
        self.sender = sender
        self.redis = redis
        self.tenant = tenant
        self.mapping = mapping
        self.clock = clock
        self.watermark = RequestWatermark(redis)

    def spec(self) -> RequestsSpec | None:
        spec = self.mapping().requests
        return spec if spec is not None and spec.enabled else None

    def run_round(self, spec: RequestsSpec) -> RoundResult:
        result = RoundResult()
        since = RequestWatermark.since(self.watermark.get(), spec.lookback_s)
        where = f"Status__c = '{APPROVED}'"
        if since is not None:
            where += f" AND SystemModstamp >= {soql_datetime(since)}"
        rows = self.salesforce.query_all(
            f"SELECT Id, SystemModstamp FROM {OBJECT} WHERE {where} ORDER BY SystemModstamp ASC, Id ASC")
        published = self.watermark.published()
        newest = self.watermark.get()
        for row in rows:
            request_id, stamp = str(row["Id"]), str(row["SystemModstamp"])
            result.seen += 1
            when = parse_stamp(stamp)
            newest = when if newest is None or when > newest else newest
            if published.get(request_id) == stamp:
                result.skipped += 1
                continue
            event = IdentityEvent(kind=EventKind.REQUEST_APPROVED, source=EventSource.SALESFORCE,
                                  tenant=self.tenant, object_id=request_id)
            publish(self.sender, event)
            self.watermark.mark_published(request_id, stamp)
            result.published += 1
        if newest is not None:  # every event of the round is in the broker: now the position may move
            keep_after = RequestWatermark.since(newest, spec.lookback_s + spec.poll_interval_s) or newest
            self.watermark.save(newest, keep_after=keep_after)
        self._record(None, result)
        if result.published:
            log.info("request_poll_round", seen=result.seen, published=result.published, skipped=result.skipped)
        return result

    def _record(self, error: Exception | None, result: RoundResult | None = None) -> None:
        fields = {"last_error": "", "last_error_at": ""}
        if error is None:
            fields["last_success_at"] = f"{self.clock():.3f}"
            fields["last_published"] = str(result.published if result else 0)
        else:
            fields = {"last_error": f"{type(error).__name__}: {str(error)[:300]}",
                      "last_error_at": f"{self.clock():.3f}"}
        try:
            self.redis.hset(STATUS_KEY, mapping=fields)
        except Exception as err:  # noqa: BLE001 - the round's outcome is logged anyway
            log.warning("request_poller_status_not_recorded", error=type(err).__name__)

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; an error is logged and the next round comes after a back-off, never an exit."""
        while not stop.is_set():
            spec = self.spec()
            if spec is None:
                log.info("request_poller_idle", reason="requests.enabled is false in the mapping")
                stop.wait(60.0)
                continue
            wait = spec.poll_interval_s
            try:
                self.run_round(spec)
            except IdsyncError as err:
                retry_after = getattr(err, "retry_after", None)
                wait = max(wait, float(retry_after or 0))
                log.warning("request_poll_failed", error=type(err).__name__, detail=str(err)[:300], retry_in=wait)
                self._record(err)
            except Exception as err:
                wait = min(spec.poll_interval_s, ERROR_BACKOFF_S)
                log.error("request_poll_failed", error=type(err).__name__, detail=str(err)[:300], retry_in=wait)
                self._record(err)
            stop.wait(wait)
