"""A Bulk API 2.0 query reader: one query job, its CSV results read in large pages, rows typed like REST rows.

Why Bulk above a threshold: the REST query resource returns at most 2,000 rows per call, so the 100,000 User rows of a
large org cost 50 calls of the daily allowance on every reconciliation; a query job costs a handful whatever the size
(create, a few status polls, one results call per `maxRecords` rows), and Salesforce builds the result server-side.
Below the threshold REST is cheaper (a job is at least three calls) and faster (no job to wait for).

The flow (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_create_job.htm,
query_get_one_job.htm, query_get_job_results.htm): `POST jobs/query` {"operation": "query", "query": SOQL} ->
poll `GET jobs/query/{id}` until JobComplete (Failed or Aborted: the job's `errorMessage`) -> `GET
jobs/query/{id}/results?maxRecords=N` as CSV, following the `Sforce-Locator` response header until it is "null".
Every call goes through the Salesforce client's admitted request path, so the limiter, token refresh and error
mapping apply as for any other call.

Why rows are typed here: results are CSV, every value a string and a null an empty field; the engine compares them
with what REST returns (JSON booleans and numbers, datetimes as `...+0000`), so each column is converted with the
field's describe type and a datetime's `Z` written as REST writes it. Salesforce stores no empty strings, so an
empty field is a null.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from shared.errors import SERVICE_SALESFORCE, PermanentError
from shared.salesforce_bulk import FINAL_STATES

#: Describe types whose CSV text is a number or a boolean in REST's JSON.
_INTEGER_TYPES = frozenset({"int", "long"})
_DECIMAL_TYPES = frozenset({"double", "currency", "percent"})


class HeaderApi(Protocol):
    def request_with_headers(self, method: str, path: str, *, body: str | None = None,
                             content_type: str = "application/json",
                             accept: str = "application/json") -> tuple[str, dict[str, str]]: ...


class BulkQueryUnavailable(PermanentError):
    """The org refused or failed the query job before any row was read: the caller reads over REST instead."""


def typed_value(text: str, field_type: str | None) -> Any:
    """One CSV cell as the REST query resource would have returned it."""
    if text == "":
        return None
    if field_type == "boolean":
        return text.lower() == "true"
    try:
        if field_type in _INTEGER_TYPES:
            return int(text)
        if field_type in _DECIMAL_TYPES:
            return float(text)
    except ValueError:
        return text
    if field_type == "datetime" and text.endswith("Z"):
        return text[:-1] + "+0000"
    return text


class BulkQuery:
    """Runs one query job at a time for one Salesforce client (not thread-safe, like the client)."""

    def __init__(self, api: HeaderApi, *, max_records: int = 50_000, first_poll_s: float = 0.25,
                 max_poll_s: float = 5.0, timeout_s: float = 600.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, on_wait: Callable[[], None] | None = None) -> None:
        self.api = api
        self.max_records = max_records
        self.first_poll_s = first_poll_s
        self.max_poll_s = max_poll_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.clock = clock
        #: called after every status poll: a caller holding a lock with a TTL (a reconcile run) renews it while a
        #: real org's job waits in its queue for minutes
        self.on_wait = on_wait
        #: API calls the last `pages` took (create, polls, results)
        self.calls = 0

    def pages(self, soql: str, types: Mapping[str, str] | None = None,
              page_rows: int = 2000) -> Iterator[list[dict[str, Any]]]:
        """The query's rows, `page_rows` at a time (typed with `types`: field name -> describe type).

        Raises `BulkQueryUnavailable` when the job is refused, fails or does not finish within `timeout_s` (no row
        has been yielded then, so the caller can read the same query over REST); errors while reading results
        propagate (rows were yielded: falling back would read them twice).
        """
        self.calls = 0
        job_id = self._create(soql)
        self._wait(job_id)
        locator: str | None = None
        while True:
            path = f"jobs/query/{quote(job_id, safe='')}/results?maxRecords={self.max_records}"
            if locator:
                path += f"&locator={quote(locator, safe='')}"
            self.calls += 1
            text, headers = self.api.request_with_headers("GET", path, accept="text/csv")
            yield from _typed_pages(text, types or {}, page_rows)
            del text
            locator = headers.get("sforce-locator")
            if not locator or locator == "null":
                return

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls += 1
        text, _headers = self.api.request_with_headers(method, path,
                                                       body=json.dumps(body) if body is not None else None)
        data = json.loads(text) if text else {}
        return data if isinstance(data, dict) else {}

    def _create(self, soql: str) -> str:
        try:
            job = self._json("POST", "jobs/query", {"operation": "query", "query": soql, "contentType": "CSV",
                                                     "columnDelimiter": "COMMA", "lineEnding": "LF"})
        except PermanentError as exc:
            raise BulkQueryUnavailable(f"Bulk API refused the query job: {exc.message}", service=SERVICE_SALESFORCE,
                                       status=exc.status, code=exc.code) from exc
        job_id = str(job.get("id") or "")
        if not job_id:
            raise BulkQueryUnavailable("Bulk API answered the query job without an id", service=SERVICE_SALESFORCE)
        return job_id

    def _wait(self, job_id: str) -> None:
        """Poll with a growing interval (each poll is an API call) until the job is final."""
        deadline = self.clock() + self.timeout_s
        interval = self.first_poll_s
        while True:
            self.sleep(interval)
            info = self._json("GET", f"jobs/query/{quote(job_id, safe='')}")
            if self.on_wait is not None:
                self.on_wait()
            state = str(info.get("state") or "")
            if state == "JobComplete":
                return
            if state in FINAL_STATES:
                raise BulkQueryUnavailable(f"Bulk API query job {job_id} {state}: "
                                           f"{info.get('errorMessage') or 'no message'}", service=SERVICE_SALESFORCE,
                                           code=state)
            if self.clock() > deadline:
                raise BulkQueryUnavailable(f"Bulk API query job {job_id} still {state} after {self.timeout_s:g} s",
                                           service=SERVICE_SALESFORCE, code="BULK_JOB_TIMEOUT")
            interval = min(self.max_poll_s, interval * 2)


def _typed_pages(text: str, types: Mapping[str, str], page_rows: int) -> Iterator[list[dict[str, Any]]]:
    if not text.strip():
        return
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return
    kinds = [types.get(name) for name in header]
    page: list[dict[str, Any]] = []
    for row in reader:
        if not row:
            continue
        page.append({name: typed_value(cell, kind) for name, cell, kind in zip(header, row, kinds, strict=False)})
        if len(page) >= page_rows:
            yield page
            page = []
    if page:
        yield page


__all__ = ["BulkQuery", "BulkQueryUnavailable", "typed_value"]
