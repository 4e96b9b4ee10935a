"""Bulk API 2.0 ingest (§5): insert, update, upsert, delete and hardDelete jobs over CSV.

Flow as in Salesforce: `POST jobs/ingest` (state Open) -> `PUT jobs/ingest/{id}/batches` (text/csv, 201) ->
`PATCH jobs/ingest/{id}` `{"state":"UploadComplete"}` -> the job runs on a background thread (InProgress, then
JobComplete or Failed) -> `GET jobs/ingest/{id}` and the three result CSVs. Each row is its own savepoint: a bad
row fails alone (`sf__Error` = `CODE:message:fields --`), the rest commit. `#N/A` sets a field to null; an empty
cell leaves it unchanged (insert: unset). Unknown columns fail the whole job with "InvalidBatch : Field name not
found : X". Bulk API 2.0 query jobs (`jobs/query`) live in `sandbox.salesforce.bulk_query`.
"""

from __future__ import annotations

import csv
import io
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.salesforce.api import SalesforceApiError, not_found
from sandbox.salesforce.org import Org, make_id
from sandbox.salesforce.sobjects import actor, json_object

OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}


def job_fields(job: Any) -> dict[str, Any]:
    """The fields every Bulk API 2.0 job shows, ingest or query (`id`, `operation`, ... `columnDelimiter`)."""
    return {
        "id": job.id,
        "operation": job.operation,
        "object": job.object,
        "createdById": job.user_id,
        "createdDate": job.created,
        "systemModstamp": job.modstamp,
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(job.version),
        "lineEnding": job.line_ending,
        "columnDelimiter": job.delimiter,
    }


class IngestJob:
    """One ingest job and its results (kept in memory; Salesforce purges jobs 7 days after they end)."""

    def __init__(self, job_id: str, spec: dict[str, Any], user_id: str, version: str, now: str) -> None:
        self.id = job_id
        self.object: str = spec["object"]
        self.operation: str = spec["operation"]
        self.external_id: str | None = spec.get("externalIdFieldName")
        self.delimiter: str = spec.get("columnDelimiter", "COMMA")
        self.line_ending: str = spec.get("lineEnding", "LF")
        self.user_id = user_id
        self.version = version
        self.created = now
        self.modstamp = now
        self.state = "Open"
        self.data: list[str] = []
        self.error_message: str | None = None
        self.header: list[str] = []
        self.successful: list[list[str]] = []
        self.failed: list[list[str]] = []
        self.unprocessed: list[list[str]] = []
        self.processed = 0

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **job_fields(self),
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/v{self.version}/jobs/ingest/{self.id}/batches",
            "numberRecordsProcessed": self.processed,
            "numberRecordsFailed": len(self.failed),
            "retries": 0,
            "totalProcessingTime": 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
        }
        if self.external_id:
            out["externalIdFieldName"] = self.external_id
        if self.error_message:
            out["errorMessage"] = self.error_message
        return out


def _error_cell(exc: SalesforceApiError) -> str:
    fields = ",".join(exc.fields)
    return f"{exc.error_code}:{exc.message}:{fields} --" if fields else f"{exc.error_code}:{exc.message}:--"


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def process_job(state: Any, job: IngestJob) -> None:
    """Run every row of an UploadComplete job against the org (each row atomic on its own)."""
    org: Org = state.org
    text = "".join(job.data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS.get(job.delimiter, ","))
    rows = [r for r in reader if r]
    if not rows:
        job.state, job.error_message = "Failed", "InvalidBatch : Empty CSV"
        return
    header = [h.strip() for h in rows[0]]
    job.header = header
    od = org.object_def(job.object)
    assert od is not None
    for h in header:
        if od.field(h) is None:
            job.state, job.error_message = "Failed", f"InvalidBatch : Field name not found : {h}"
            job.unprocessed = rows[1:]
            return
    id_col = next((i for i, h in enumerate(header) if h.lower() == "id"), None)
    for row in rows[1:]:
        values: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=False):
            if cell == "#N/A":
                values[name] = None
            elif cell != "":
                values[name] = cell
        rid = row[id_col] if id_col is not None and id_col < len(row) else ""
        created = False
        try:
            with state.lock:
                if job.operation == "insert":
                    values.pop("Id", None)
                    rid, created = org.insert(od.name, values, actor=job.user_id), True
                elif job.operation == "update":
                    if not rid:
                        raise SalesforceApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                    body = {k: v for k, v in values.items() if k.lower() != "id"}
                    rid = org.update(od.name, rid, body, actor=job.user_id)
                elif job.operation == "upsert":
                    key = next((v for k, v in values.items() if k.lower() == (job.external_id or "").lower()), None)
                    if key is None:
                        raise SalesforceApiError(400, "MISSING_ARGUMENT", f"{job.external_id} not specified",
                                                 [job.external_id or ""])
                    rid, created = org.upsert(od.name, job.external_id or "Id", key, values, actor=job.user_id)
                else:
                    if not rid:
                        raise SalesforceApiError(400, "MISSING_ARGUMENT", "Id not specified in a delete call", ["Id"])
                    rid = org.delete(od.name, rid, actor=job.user_id)
            job.successful.append([rid, "true" if created else "false", *row])
        except SalesforceApiError as exc:
            if exc.status == 404:
                exc = SalesforceApiError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            job.failed.append(["" if created or job.operation == "insert" else rid, _error_cell(exc), *row])
        job.processed += 1
    job.state = "JobComplete"


def bulk_routes(state: Any) -> list[BaseRoute]:
    jobs: dict[str, IngestJob] = state.org.bulk_jobs

    def get_job(job_id: str) -> IngestJob:
        job = jobs.get(job_id)
        if job is None:
            raise not_found("Job not found")
        return job

    async def create(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"done": True, "records": [j.info() for j in jobs.values()], "nextRecordsUrl": None})
        spec = await json_object(request)
        org: Org = state.org
        od = org.object_def(str(spec.get("object", "")))
        if od is None:
            raise SalesforceApiError(400, "INVALIDENTITY", f"Entity '{spec.get('object')}' is not supported by the "
                                     "Bulk API.")
        if spec.get("operation") not in OPERATIONS:
            raise SalesforceApiError(400, "INVALIDJOB", f"Invalid operation: {spec.get('operation')}")
        if spec.get("operation") == "upsert" and not spec.get("externalIdFieldName"):
            raise SalesforceApiError(400, "INVALIDJOB", "External ID was blank for upsert")
        if spec.get("columnDelimiter", "COMMA") not in DELIMITERS or spec.get("lineEnding", "LF") not in ("LF",
                                                                                                           "CRLF"):
            raise SalesforceApiError(400, "INVALIDJOB", "Invalid columnDelimiter or lineEnding")
        with state.lock:
            org._counter += 1
            job_id = make_id("750", org._counter)
        spec = dict(spec, object=od.name)
        job = IngestJob(job_id, spec, actor(request), request.path_params["version"], org.now_str())
        jobs[job_id] = job
        return JSONResponse(job.info())

    async def upload(request: Request) -> Response:
        job = get_job(request.path_params["job_id"])
        if job.state != "Open":
            raise SalesforceApiError(409, "INVALIDJOBSTATE", f"Job state is {job.state}, data can only be uploaded to "
                                     "an Open job")
        ctype = request.headers.get("content-type", "")
        if "csv" not in ctype:
            raise SalesforceApiError(415, "INVALID_CONTENT_TYPE", f"Content type {ctype} is not supported")
        text = (await request.body()).decode("utf-8")
        if job.data and text:
            text = text.split("\n", 1)[1] if "\n" in text else ""  # a later upload repeats the header row
        job.data.append(text)
        return Response(status_code=201)

    async def job_resource(request: Request) -> Response:
        job = get_job(request.path_params["job_id"])
        if request.method == "GET":
            return JSONResponse(job.info())
        if request.method == "DELETE":
            if job.state in ("Open", "UploadComplete", "InProgress"):
                raise SalesforceApiError(400, "INVALIDJOBSTATE", "Job must be closed before it can be deleted")
            jobs.pop(job.id, None)
            return Response(status_code=204)
        body = await json_object(request)
        new_state = body.get("state")
        if new_state == "Aborted":
            if job.state not in ("Open", "UploadComplete"):
                raise SalesforceApiError(400, "INVALIDJOBSTATE", f"Job state is {job.state}, cannot abort")
            job.state = "Aborted"
            return JSONResponse(job.info())
        if new_state != "UploadComplete" or job.state != "Open":
            raise SalesforceApiError(400, "INVALIDJOBSTATE", f"Cannot change job state from {job.state} to "
                                     f"{new_state}")
        job.state = "UploadComplete"
        answer = job.info()
        state.org.count_bulk_batch(state.clock.time())

        def run() -> None:
            job.state = "InProgress"
            try:
                process_job(state, job)
            except Exception as exc:  # noqa: BLE001 - a job that breaks reports Failed, as Salesforce does
                job.state, job.error_message = "Failed", f"InternalServerError : {exc}"
            job.modstamp = state.org.now_str()

        threading.Thread(target=run, name=f"bulk-{job.id}", daemon=True).start()
        return JSONResponse(answer)

    async def results(request: Request) -> Response:
        job = get_job(request.path_params["job_id"])
        kind = request.path_params["kind"]
        header = job.header or []
        if kind == "successfulResults":
            text = _csv_text(["sf__Id", "sf__Created", *header], job.successful)
        elif kind == "failedResults":
            text = _csv_text(["sf__Id", "sf__Error", *header], job.failed)
        elif kind == "unprocessedrecords":
            text = _csv_text(header, job.unprocessed) if header else "".join(job.data)
        else:
            raise not_found()
        return Response(text, media_type="text/csv")

    return [
        Route("/jobs/ingest", create, methods=["GET", "POST"]),
        Route("/jobs/ingest/{job_id}", job_resource, methods=["GET", "PATCH", "DELETE"]),
        Route("/jobs/ingest/{job_id}/batches", upload, methods=["PUT"]),
        Route("/jobs/ingest/{job_id}/{kind}", results, methods=["GET"]),
    ]
