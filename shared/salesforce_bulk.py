"""A small Bulk API 2.0 ingest client: one CSV job, its per-row results.

Why Bulk API 2.0 above a threshold: sObject Collections move 200 records per call, so 20,000 records cost 100 calls
against the daily allowance and 100 round trips; an ingest job is a handful of calls (create, upload, close, a few
polls, results) whatever the size, and Salesforce runs it server-side in parallel. Below the threshold collections
are faster end to end (no job to wait for).

The flow (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/walkthrough_upload_data.htm):
`POST jobs/ingest` (state Open) -> `PUT jobs/ingest/{id}/batches` (text/csv) -> `PATCH jobs/ingest/{id}`
`{"state": "UploadComplete"}` -> poll `GET jobs/ingest/{id}` until JobComplete, Failed or Aborted -> read
`successfulResults` (sf__Id, sf__Created, ...) and `failedResults` (sf__Id, sf__Error = `CODE:message:fields`).
Every call goes through `SalesforceClient.request_text`, so the limiter, token refresh and error mapping apply.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import SERVICE_SALESFORCE, PermanentError, RetryableError

#: States in which a job does no more work.
FINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})


class TextApi(Protocol):
    def request_text(self, method: str, path: str, *, body: str | None = None,
                     content_type: str = "application/json", accept: str = "application/json") -> str: ...


@dataclass(frozen=True, slots=True)
class RowFailure:
    id: str
    code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestResult:
    job_id: str
    state: str
    succeeded: tuple[str, ...] = ()
    failed: tuple[RowFailure, ...] = ()
    error: str | None = None  # the job's own errorMessage when it Failed as a whole
    calls: int = 0  # API calls the job took


@dataclass
class _Counter:
    calls: int = field(default=0)


def parse_row_error(cell: str) -> tuple[str, str]:
    """`INACTIVE_OWNER_OR_USER:operation performed with inactive user...:--` -> (code, message)."""
    code, _, rest = cell.partition(":")
    message = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return code.strip() or "UNKNOWN", message.strip()


def parse_row_fields(cell: str) -> tuple[str, ...]:
    """`INVALID_EMAIL_ADDRESS:Email: invalid email address: x:Email --` -> ("Email",): the fields after the last
    colon, before the closing `--` (empty when the error names none)."""
    if ":" not in cell.partition(":")[2]:
        return ()
    names = cell.rsplit(":", 1)[1].strip().removesuffix("--").strip()
    return tuple(n.strip() for n in names.split(",") if n.strip())


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


class BulkIngest:
    """Runs one ingest job at a time for one Salesforce client (not thread-safe, like the client)."""

    def __init__(self, api: TextApi, *, poll_interval_s: float = 1.0, timeout_s: float = 240.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 on_wait: Callable[[], None] | None = None) -> None:
        self.api = api
        #: called after every status poll (a reconcile run renews its lock there while the org runs the job)
        self.on_wait = on_wait
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.clock = clock

    def _json(self, counter: _Counter, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        counter.calls += 1
        text = self.api.request_text(method, path, body=json.dumps(body) if body is not None else None)
        data = json.loads(text) if text else {}
        return data if isinstance(data, dict) else {}

    def update(self, sobject: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> IngestResult:
        """Update `rows` (the first column is Id) of `sobject`; returns which ids succeeded and which failed why.

        Raises `RetryableError` when the job does not finish within `timeout_s` (it keeps running server-side: the
        caller re-reads what changed), `PermanentError` when Salesforce refuses the job itself.
        """
        counter = _Counter()
        job = self._json(counter, "POST", "jobs/ingest", {"object": sobject, "operation": "update",
                                                           "contentType": "CSV", "lineEnding": "LF"})
        job_id = str(job.get("id") or "")
        if not job_id:
            raise PermanentError(f"Bulk API refused the {sobject} update job", service=SERVICE_SALESFORCE)
        counter.calls += 1
        self.api.request_text("PUT", f"jobs/ingest/{job_id}/batches", body=to_csv(header, rows),
                              content_type="text/csv")
        info = self._json(counter, "PATCH", f"jobs/ingest/{job_id}", {"state": "UploadComplete"})
        deadline = self.clock() + self.timeout_s
        while str(info.get("state")) not in FINAL_STATES:
            if self.clock() > deadline:
                raise RetryableError(f"Bulk API job {job_id} still {info.get('state')} after {self.timeout_s:g} s",
                                     service=SERVICE_SALESFORCE, code="BULK_JOB_TIMEOUT")
            self.sleep(self.poll_interval_s)
            info = self._json(counter, "GET", f"jobs/ingest/{job_id}")
            if self.on_wait is not None:
                self.on_wait()
        state = str(info.get("state"))
        if state != "JobComplete":
            return IngestResult(job_id, state, error=str(info.get("errorMessage") or state), calls=counter.calls)
        counter.calls += 1
        ok = self._rows(self.api.request_text("GET", f"jobs/ingest/{job_id}/successfulResults", accept="text/csv"))
        bad: list[dict[str, str]] = []
        if str(info.get("numberRecordsFailed", "")) != "0":  # the job says none failed: no call to list them
            counter.calls += 1
            bad = self._rows(self.api.request_text("GET", f"jobs/ingest/{job_id}/failedResults", accept="text/csv"))
        failures = []
        for row in bad:
            cell = row.get("sf__Error", "")
            code, message = parse_row_error(cell)
            failures.append(RowFailure(row.get("sf__Id") or row.get("Id") or "", code, message,
                                       parse_row_fields(cell)))
        return IngestResult(job_id, state, tuple(r.get("sf__Id") or r.get("Id") or "" for r in ok), tuple(failures),
                            calls=counter.calls)

    @staticmethod
    def _rows(text: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(text))) if text.strip() else []
