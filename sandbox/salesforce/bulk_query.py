"""Bulk API 2.0 query jobs (`jobs/query`), simulated after Salesforce's public documentation.

Why the sandbox has them: a product client written against the real API creates a job, polls it, and pages the CSV
results with `Sforce-Locator`; the sandbox must answer each of those calls as a real org does, or the client is
only ever tested against itself. Sources (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/
api_asynch/): `queries.htm` (overview and SOQL restrictions), `query_create_job.htm`, `query_get_one_job.htm`,
`query_get_job_results.htm`, `query_abort_job.htm`, `query_delete_job.htm`, `query_get_all_jobs.htm`.

Documented behaviour reproduced here:
- `POST jobs/query` `{"operation": "query"|"queryAll", "query": ..., "columnDelimiter", "lineEnding"}` answers 200
  with the job (`id` with the 750 key prefix, state `UploadComplete`); unsupported SOQL (GROUP BY, OFFSET, TYPEOF,
  aggregate functions, parent-to-child sub-queries, FIELDS()) is refused, and so is SOQL the REST query resource
  would refuse (same engine, same codes and caret messages).
- The job then runs in the background: `InProgress`, then `JobComplete` (or `Failed` with `errorMessage`). The
  rows are a snapshot taken when the job runs; later writes do not change its results.
- `GET jobs/query/{id}/results[?locator=..&maxRecords=..]` needs `JobComplete`, answers `text/csv` with the header
  row on every page, `Sforce-NumberOfRecords` and `Sforce-Locator` (the next page, or the string `null`). A locator
  stays valid as long as the job exists and may be fetched again; results asked for with another API version than
  the job's answer 409.
- `PATCH jobs/query/{id}` `{"state": "Aborted"}` only from `UploadComplete`/`InProgress`; `DELETE` only once the job
  is `JobComplete`, `Aborted` or `Failed` (else 400 `API_ERROR`, the documented body); `GET jobs/query` lists jobs.

Choices where the documentation is silent (documented in docs/sandbox.md as the sandbox's, not Salesforce's):
- unsupported SOQL answers 400 `FUNCTIONALITY_NOT_ENABLED` with "... not supported in Bulk Query" (the wording real
  orgs put in failed Bulk query batches); results before `JobComplete` answer 400 `INVALIDJOBSTATE`; an unknown
  locator or a bad `maxRecords` answers 400 `INVALID_QUERY_LOCATOR` / `INVALIDREQUEST`;
- every cell is quoted (the documented example quotes every value), null is an empty quoted cell `""` (so null and
  the empty string cannot be told apart, as in a real org), booleans `true`/`false`, datetimes
  `2026-11-30T10:00:00.000Z`, dates `2026-11-30`, numbers as plain text; header names as written in the SELECT;
- without `maxRecords` a page holds `salesforce.bulk_query_default_max_records` rows (the docs only say "a default
  value based on the service"); a locator is the base64 of the row offset (the documented example, `MTAwMDA`, is
  base64 of "10000");
- `salesforce.bulk_query_processing_s` keeps a job `InProgress` that long on the sandbox clock after its snapshot,
  so tests can observe (and abort) a running job without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.salesforce.api import SalesforceApiError, not_found
from sandbox.salesforce.bulk import DELIMITERS, job_fields
from sandbox.salesforce.org import Org, make_id
from sandbox.salesforce.schema import FieldInfo
from sandbox.salesforce.sobjects import actor, json_object
from sandbox.salesforce.soql import SoqlError, SoqlQuery, execute, parse
from sandbox.salesforce.soql_eval import Binder, formatter, make_getter

OPERATIONS = ("query", "queryAll")
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
TERMINAL = ("JobComplete", "Aborted", "Failed")
DEFAULT_MAX_RECORDS = 100_000

_LITERAL_RE = re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL)
_SUBQUERY_RE = re.compile(r"\(\s*select\b", re.IGNORECASE)
_FROM_RE = re.compile(r"\bfrom\b", re.IGNORECASE)
#: what Bulk API 2.0 query does not support (queries.htm, "SOQL Considerations"), checked on the text with string
#: literals blanked so that `WHERE Name = 'group by'` is not mistaken for a clause
_UNSUPPORTED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bgroup\s+by\b", re.IGNORECASE), "GROUP BY not supported in Bulk Query"),
    (re.compile(r"\boffset\b", re.IGNORECASE), "OFFSET not supported in Bulk Query"),
    (re.compile(r"\btypeof\b", re.IGNORECASE), "TYPEOF not supported in Bulk Query"),
    (re.compile(r"\b(?:count|count_distinct|sum|avg|min|max)\s*\(", re.IGNORECASE),
     "Aggregate functions not supported in Bulk Query"),
    (re.compile(r"\bfields\s*\(", re.IGNORECASE), "Selecting compound data not supported in Bulk Query"),
)

Cell = str | None


class QueryJob:
    """One query job: its spec, its state, and once it has run the snapshot of its rows (already CSV text cells).

    Kept in memory for the life of the sandbox (Salesforce keeps jobs 7 days after they end).
    """

    def __init__(self, job_id: str, query: SoqlQuery, sobject: str, spec: dict[str, Any], user_id: str,
                 version: str, now: str) -> None:
        self.id = job_id
        self.query = query
        self.object = sobject
        self.operation: str = spec["operation"]
        self.delimiter: str = spec.get("columnDelimiter") or "COMMA"
        self.line_ending: str = spec.get("lineEnding") or "LF"
        self.user_id = user_id
        self.version = version
        self.created = now
        self.modstamp = now
        self.state = "UploadComplete"
        self.error_message: str | None = None
        self.header = [ref.dotted for ref in query.fields]
        self.rows: list[list[Cell]] | None = None
        self.processing_ms = 0
        #: sandbox-clock time from which a snapshotted job reports JobComplete (salesforce.bulk_query_processing_s)
        self.ready_at = 0.0
        #: guards state changes: the runner thread and an abort request may race
        self.lock = threading.Lock()

    def info(self, *, full: bool = True) -> dict[str, Any]:
        """The job as Salesforce shows it: the create/abort answer, or (`full`) Get Information About a Query Job."""
        out = job_fields(self)
        if full:
            out["jobType"] = "V2Query"
            out["numberRecordsProcessed"] = len(self.rows or []) if self.state == "JobComplete" else 0
            out["retries"] = 0
            out["totalProcessingTime"] = self.processing_ms
            if self.error_message:
                out["errorMessage"] = self.error_message
        return out


class _NamesOnly:
    """The org's describe without its rows: binds and type-checks a query at create time without running it."""

    def __init__(self, org: Org) -> None:
        self.org = org

    def object_names(self) -> list[str]:
        return self.org.object_names()

    def describe_fields(self, sobject: str) -> dict[str, FieldInfo] | None:
        return self.org.describe_fields(sobject)

    def records(self, sobject: str, include_deleted: bool = False) -> Iterable[dict[str, Any]]:
        return []

    def get(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        return None


def check_supported(soql: str) -> None:
    """Refuse what Bulk API 2.0 query documents as unsupported, before the SOQL engine sees the text."""
    text = _LITERAL_RE.sub("''", soql)
    sub = _SUBQUERY_RE.search(text)
    first_from = _FROM_RE.search(text)
    if sub is not None and (first_from is None or sub.start() < first_from.start()):
        # a sub-query in the SELECT list is a parent-to-child relationship query; one in WHERE is a semi-join
        raise SalesforceApiError(400, "FUNCTIONALITY_NOT_ENABLED",
                                 "Aggregate Relationships not supported in Bulk Query")
    for pattern, message in _UNSUPPORTED:
        if pattern.search(text):
            raise SalesforceApiError(400, "FUNCTIONALITY_NOT_ENABLED", message)


def validate(org: Org, soql: Any, lock: Any) -> tuple[SoqlQuery, str]:
    """Parse and bind `soql` as the job will run it; returns the query and the canonical object name."""
    if not isinstance(soql, str) or not soql.strip():
        raise SalesforceApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    check_supported(soql)
    try:
        query = parse(soql)
        with lock:
            result = execute(query, _NamesOnly(org))
    except SoqlError as exc:
        raise SalesforceApiError(400, exc.error_code, exc.message) from None
    return query, result.sobject


def cell_formatter(info: Any) -> Callable[[Any], Cell]:
    """How a stored value of this field is written in a Bulk query CSV cell (None: null, written as `""`): the value
    the REST query resource returns (`soql_eval.formatter`), as text: booleans `true`/`false`, numbers as written,
    datetimes ending `Z` where REST writes `+0000`, an empty string null (Salesforce stores none)."""
    rest = formatter(info)
    is_datetime = info.type == "datetime"

    def cell(value: Any) -> Cell:
        out = rest(value)
        if out is None or out == "":
            return None
        if isinstance(out, bool):
            return "true" if out else "false"
        text = str(out)
        return text[:-5] + "Z" if is_datetime and text.endswith("+0000") else text

    return cell


def snapshot(state: Any, job: QueryJob) -> list[list[Cell]]:
    """Run the job's query once against the org and keep every row as CSV cells (the job's frozen result)."""
    org: Org = state.org
    with state.lock:
        result = execute(job.query, org, include_deleted=job.operation == "queryAll", now=state.clock.now())
        assert result.parents is not None
        binder = Binder(org, job.query.text)
        bound = [binder.bind(result.sobject, ref) for ref in job.query.fields]
        columns = [(make_getter(b, result.parents), cell_formatter(b.info)) for b in bound]
        return [[fmt(get(row)) for get, fmt in columns] for row in result.rows]


def encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def decode_locator(locator: str, total: int) -> int:
    """The row offset a locator stands for; 400 INVALID_QUERY_LOCATOR when it is not one this job handed out."""
    try:
        raw = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.isdigit() or int(raw) > total:
        raise SalesforceApiError(400, "INVALID_QUERY_LOCATOR", f"Invalid locator: {locator}")
    return int(raw)


def csv_page(job: QueryJob, rows: list[list[Cell]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=DELIMITERS[job.delimiter], lineterminator=LINE_ENDINGS[job.line_ending],
                        quoting=csv.QUOTE_ALL)
    writer.writerow(job.header)
    writer.writerows(rows)
    return buf.getvalue()


def bulk_query_routes(state: Any) -> list[BaseRoute]:
    """Routes for the data-API mount (behind `ApiGuard`: each call is one counted API request, like any REST call)."""
    org: Org = state.org
    jobs: dict[str, QueryJob] = org.bulk_query_jobs

    def refresh(job: QueryJob) -> None:
        """A snapshotted job turns JobComplete once the sandbox clock passes its processing time."""
        with job.lock:
            if job.state == "InProgress" and job.rows is not None and state.clock.time() >= job.ready_at:
                job.state = "JobComplete"
                job.modstamp = org.now_str()

    def get_job(job_id: str) -> QueryJob:
        job = jobs.get(job_id)
        if job is None:
            raise not_found()
        refresh(job)
        return job

    def run(job: QueryJob) -> None:
        with job.lock:
            if job.state != "UploadComplete":  # aborted before it started
                return
            job.state, job.modstamp = "InProgress", org.now_str()
        started = time.perf_counter()
        try:
            rows = snapshot(state, job)
        except Exception as exc:  # noqa: BLE001 - a job that breaks reports Failed, as Salesforce does
            with job.lock:
                if job.state == "InProgress":
                    job.state, job.error_message = "Failed", f"InternalServerError : {exc}"
                    job.modstamp = org.now_str()
            return
        with job.lock:
            if job.state != "InProgress":
                return
            job.rows = rows
            job.processing_ms = int((time.perf_counter() - started) * 1000)
            job.ready_at = state.clock.time() + float(state.config.get("salesforce.bulk_query_processing_s", 0) or 0)
        refresh(job)

    async def collection(request: Request) -> Response:
        if request.method == "GET":
            wanted = request.query_params.get("jobType")
            listed = [j for j in list(jobs.values()) if wanted in (None, "V2Query")]
            for job in listed:
                refresh(job)
            return JSONResponse({"done": True, "records": [j.info() for j in listed], "nextRecordsUrl": None})
        spec = await json_object(request)
        if spec.get("operation") not in OPERATIONS:
            raise SalesforceApiError(400, "INVALIDJOB", f"Invalid operation: {spec.get('operation')}; query jobs take "
                                     "query or queryAll")
        if spec.get("contentType", "CSV") != "CSV":
            raise SalesforceApiError(400, "INVALIDJOB", f"Invalid contentType: {spec.get('contentType')}; only CSV is "
                                     "supported")
        if spec.get("columnDelimiter", "COMMA") not in DELIMITERS:
            raise SalesforceApiError(400, "INVALIDJOB", f"Invalid columnDelimiter: {spec.get('columnDelimiter')}; "
                                     f"one of {', '.join(DELIMITERS)}")
        if spec.get("lineEnding", "LF") not in LINE_ENDINGS:
            raise SalesforceApiError(400, "INVALIDJOB", f"Invalid lineEnding: {spec.get('lineEnding')}; LF or CRLF")
        query, sobject = validate(org, spec.get("query"), state.lock)
        now = state.clock.time()
        with state.lock:
            org._counter += 1
            job_id = make_id("750", org._counter)
            org._prune(org.bulk_query_created, now)
            org.bulk_query_created.append(now)
        job = QueryJob(job_id, query, sobject, spec, actor(request), request.path_params["version"], org.now_str())
        jobs[job_id] = job
        answer = job.info(full=False)
        threading.Thread(target=run, args=(job,), name=f"bulk-query-{job.id}", daemon=True).start()
        return JSONResponse(answer)

    async def job_resource(request: Request) -> Response:
        job = get_job(request.path_params["job_id"])
        if request.method == "GET":
            return JSONResponse(job.info())
        if request.method == "DELETE":
            if job.state not in TERMINAL:
                raise SalesforceApiError(400, "API_ERROR", "Error encountered when deleting the job because the job is "
                                         "not terminated")
            jobs.pop(job.id, None)
            return Response(status_code=204)
        body = await json_object(request)
        if body.get("state") != "Aborted":
            raise SalesforceApiError(400, "INVALIDJOBSTATE", f"Invalid state: {body.get('state')}; a query job can "
                                     "only be set to Aborted")
        with job.lock:
            if job.state not in ("UploadComplete", "InProgress"):
                raise SalesforceApiError(400, "INVALIDJOBSTATE", f"Job state is {job.state}, cannot abort")
            job.state, job.rows, job.modstamp = "Aborted", None, org.now_str()
        return JSONResponse(job.info(full=False))

    def results(request: Request) -> Response:
        """Sync endpoint: a page of 100,000 rows is rendered in the threadpool, not on the event loop."""
        job = get_job(request.path_params["job_id"])
        if request.path_params["version"] != job.version:
            raise SalesforceApiError(409, "INVALIDJOB", f"Use the same API version to get query results that you used "
                                     f"to create the query (v{job.version})")
        rows = job.rows
        if job.state != "JobComplete" or rows is None:
            raise SalesforceApiError(400, "INVALIDJOBSTATE", f"Job state is {job.state}; results are available once "
                                     "the job is JobComplete")
        raw_max = request.query_params.get("maxRecords")
        if raw_max is None or raw_max == "":
            size = int(state.config.get("salesforce.bulk_query_default_max_records", DEFAULT_MAX_RECORDS))
        elif raw_max.isdigit() and int(raw_max) > 0:
            size = int(raw_max)
        else:
            raise SalesforceApiError(400, "INVALIDREQUEST", f"Invalid maxRecords: {raw_max}; a positive integer")
        locator = request.query_params.get("locator")
        start = decode_locator(locator, len(rows)) if locator else 0
        stop = min(start + max(size, 1), len(rows))
        headers = {
            "Sforce-Locator": encode_locator(stop) if stop < len(rows) else "null",
            "Sforce-NumberOfRecords": str(stop - start),
        }
        return Response(csv_page(job, rows[start:stop]), media_type="text/csv", headers=headers)

    return [
        Route("/jobs/query", collection, methods=["GET", "POST"]),
        Route("/jobs/query/{job_id}", job_resource, methods=["GET", "PATCH", "DELETE"]),
        Route("/jobs/query/{job_id}/results", results, methods=["GET"]),
    ]
