"""Composite (`POST composite`) and sObject Collections (`composite/sobjects`), §3.3-3.4.

Both run inside one org transaction with Salesforce's MIXED_DML check on (setup objects such as User,
PermissionSetAssignment or GroupMember can't be written with non-setup objects in one call). Rollback restores the
journaled records (see `Org.transaction`). Each call counts as one API request (the guard counts the HTTP call).

Composite: ≤25 subrequests, ≤5 of them queries or collections; `@{ref.path}` references (`@{r1.id}`,
`@{q.records[0].Id}`) in URLs and bodies; always HTTP 200 with `compositeResponse`. With `allOrNone` a failure stops
the run and every other subrequest answers 400 PROCESSING_HALTED; without it a subrequest whose reference points at
a failed one answers 400 PROCESSING_HALTED "Invalid reference specified...".
Collections: ≤200 records, per-record results whose errors use `statusCode`; allOrNone rolls back with
ALL_OR_NONE_OPERATION_ROLLED_BACK on the good rows. Over-limit or malformed calls get 400 with an error list.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sandbox.salesforce.api import SalesforceApiError, not_found, version_supported
from sandbox.salesforce.limits import limits_body
from sandbox.salesforce.org import MultipleMatches, Org
from sandbox.salesforce.sobjects import actor, json_body, record_url, render

MAX_SUBREQUESTS = 25
MAX_QUERY_OR_COLLECTION = 5
MAX_COLLECTION_RECORDS = 200
HALTED = "The transaction was rolled back since another operation in the same transaction failed."
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}
_REF_RE = re.compile(r"@\{([A-Za-z0-9_]+)\.([^}]+)\}")
_PATH_RE = re.compile(r"^/services/data/v([^/]+)/(.*)$")


def _too_many_records() -> SalesforceApiError:
    return SalesforceApiError(400, "EXCEEDED_ID_LIMIT",
                              f"record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into "
                              "this call")


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# ------------------------------------------------------------------------------------------ collections
def _failure(exc: SalesforceApiError, rid: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"success": False, "errors": [exc.collection_error()]}
    if rid:
        out = {"id": rid, **out}
    return out


def _run_collection(
    org: Org, all_or_none: bool, items: list[Any], op: Any, id_of: Any = lambda item: None, creates: bool = False
) -> list[dict[str, Any]]:
    """Apply `op(item) -> result dict` to every item in one transaction; per-item failures become results.

    With allOrNone every item is still tried (so each bad record reports its own error), then everything rolls back
    and the good rows report ALL_OR_NONE_OPERATION_ROLLED_BACK (without an id when the row would have been new).
    """
    results: list[dict[str, Any]] = []
    failed = False
    with org.transaction(mixed_dml=True) as txn:
        for item in items:
            try:
                with org.transaction():
                    results.append(op(item))
            except SalesforceApiError as exc:
                failed = True
                results.append(_failure(exc, id_of(item)))
        if all_or_none and failed:
            org.rollback(txn)
            rolled: list[dict[str, Any]] = []
            for r in results:
                if not r["success"]:
                    rolled.append(r)
                elif creates or r.get("created"):
                    rolled.append({"success": False, "errors": [ROLLED_BACK]})
                else:
                    rolled.append({"id": r["id"], "success": False, "errors": [ROLLED_BACK]})
            results = rolled
    return results


def collection_create(org: Org, body: Any, who: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", "Expected an object with a records array")
    records = body["records"]
    if len(records) > MAX_COLLECTION_RECORDS:
        raise _too_many_records()

    def op(rec: Any) -> dict[str, Any]:
        if not isinstance(rec, dict):
            raise SalesforceApiError(400, "INVALID_INPUT", "Each record must be an object")
        sobject = (rec.get("attributes") or {}).get("type")
        if not sobject:
            raise SalesforceApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        if rec.get("id") or rec.get("Id"):
            raise SalesforceApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call",
                                     ["Id"])
        fields = {k: v for k, v in rec.items() if k not in ("attributes", "id", "Id")}
        return {"id": org.insert(sobject, fields, actor=who), "success": True, "errors": []}

    return _run_collection(org, _bool(body.get("allOrNone")), records, op, creates=True)


def collection_update(org: Org, body: Any, who: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", "Expected an object with a records array")
    records = body["records"]
    if len(records) > MAX_COLLECTION_RECORDS:
        raise _too_many_records()

    def op(rec: Any) -> dict[str, Any]:
        if not isinstance(rec, dict):
            raise SalesforceApiError(400, "INVALID_INPUT", "Each record must be an object")
        rid = rec.get("id") or rec.get("Id")
        if not rid:
            raise SalesforceApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        sobject = (rec.get("attributes") or {}).get("type")
        fields = {k: v for k, v in rec.items() if k not in ("attributes", "id", "Id")}
        try:
            return {"id": org.update(sobject, rid, fields, actor=who), "success": True, "errors": []}
        except SalesforceApiError as exc:
            if exc.status == 404:  # collections report a missing row per record, not as a 404
                raise SalesforceApiError(400, "ENTITY_IS_DELETED" if exc.error_code == "ENTITY_IS_DELETED"
                                         else "INVALID_CROSS_REFERENCE_KEY",
                                         "entity is deleted" if exc.error_code == "ENTITY_IS_DELETED"
                                         else "invalid cross reference id") from None
            raise

    def id_of(rec: Any) -> str | None:
        return (rec.get("id") or rec.get("Id")) if isinstance(rec, dict) else None

    return _run_collection(org, _bool(body.get("allOrNone")), records, op, id_of)


def collection_upsert(org: Org, sobject: str, ext_field: str, body: Any, who: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", "Expected an object with a records array")
    records = body["records"]
    if len(records) > MAX_COLLECTION_RECORDS:
        raise _too_many_records()
    od = org.require_object(sobject)
    if od.field(ext_field) is None:
        raise SalesforceApiError(404, "NOT_FOUND",
                                 f"Provided external ID field does not exist or is not accessible: {ext_field}")

    def op(rec: Any) -> dict[str, Any]:
        if not isinstance(rec, dict):
            raise SalesforceApiError(400, "INVALID_INPUT", "Each record must be an object")
        value = next((v for k, v in rec.items() if k.lower() == ext_field.lower()), None)
        if value in (None, ""):
            raise SalesforceApiError(400, "MISSING_ARGUMENT", f"{ext_field} not specified", [ext_field])
        fields = {k: v for k, v in rec.items() if k != "attributes"}
        try:
            rid, created = org.upsert(od.name, ext_field, str(value), fields, actor=who)
        except MultipleMatches as exc:
            raise SalesforceApiError(300, "DUPLICATE_EXTERNAL_ID",
                                     f"{ext_field}: more than one record found for external id field: "
                                     f"{exc.ids}", [ext_field]) from None
        return {"id": rid, "success": True, "errors": [], "created": created}

    return _run_collection(org, _bool(body.get("allOrNone")), records, op)


def collection_delete(org: Org, ids: list[str], all_or_none: bool, who: str) -> list[dict[str, Any]]:
    if len(ids) > MAX_COLLECTION_RECORDS:
        raise _too_many_records()

    def op(rid: str) -> dict[str, Any]:
        try:
            return {"id": org.delete(None, rid, actor=who), "success": True, "errors": []}
        except SalesforceApiError as exc:
            if exc.status == 404:
                raise SalesforceApiError(400, "ENTITY_IS_DELETED" if exc.error_code == "ENTITY_IS_DELETED"
                                         else "INVALID_CROSS_REFERENCE_KEY",
                                         "entity is deleted" if exc.error_code == "ENTITY_IS_DELETED"
                                         else "invalid cross reference id") from None
            raise

    return _run_collection(org, all_or_none, ids, op, lambda rid: rid)


def collection_retrieve(org: Org, sobject: str, ids: list[str], fields: list[str], version: str) -> list[Any]:
    od = org.require_object(sobject)
    if not fields:
        raise SalesforceApiError(400, "MALFORMED_QUERY", "The 'fields' parameter is required", ["fields"])
    out: list[Any] = []
    with org.lock:
        for rid in ids:
            hit = org.get_live(rid)
            out.append(render(od, hit[1], version, fields) if hit and hit[0] == od.name else None)
    return out


def _split_ids(raw: str | None) -> list[str]:
    return [i.strip() for i in (raw or "").split(",") if i.strip()]


# ------------------------------------------------------------------------------------------ dispatch
def dispatch(state: Any, method: str, url: str, body: Any, who: str, headers: dict[str, str]) -> tuple[int, Any, dict]:
    """Run one REST call in-process (a composite subrequest); returns (status, body, headers)."""
    org: Org = state.org
    parts = urlsplit(url)
    m = _PATH_RE.match(parts.path.rstrip("/"))
    if not m or not version_supported(m.group(1)):
        raise not_found()
    version, rest = m.group(1), m.group(2)
    segs = [unquote(s) for s in rest.split("/")]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    method = method.upper()
    if segs[0] == "sobjects" and len(segs) >= 2:
        od = org.require_object(segs[1])
        if len(segs) == 2 and method == "POST":
            rid = org.insert(od.name, _obj(body), actor=who)
            return 201, {"id": rid, "success": True, "errors": []}, {"Location": record_url(version, od.name, rid)}
        if len(segs) == 3 and segs[2] == "describe" and method == "GET":
            return 200, od.describe(f"/services/data/v{version}"), {}
        if len(segs) == 3:
            if method == "GET":
                fields = _split_ids(query.get("fields")) or None
                d, rec = org.find(od.name, segs[2])
                return 200, render(d, rec, version, fields), {}
            if method == "PATCH":
                org.update(od.name, segs[2], _obj(body), actor=who)
                return 204, None, {}
            if method == "DELETE":
                org.delete(od.name, segs[2], actor=who)
                return 204, None, {}
        if len(segs) == 4 and method == "PATCH":
            try:
                rid, created = org.upsert(od.name, segs[2], segs[3], _obj(body), actor=who)
            except MultipleMatches as exc:
                return 300, [record_url(version, od.name, i) for i in exc.ids], {}
            return (201 if created else 200), {"id": rid, "success": True, "errors": [], "created": created}, {}
        if len(segs) == 4 and method == "GET":
            ids = org.lookup(od, segs[2], segs[3])
            if not ids:
                raise not_found()
            return 200, render(od, org.live[od.name][ids[0]], version), {}
    if segs[0] in ("query", "queryAll") and method == "GET":
        from sandbox.salesforce import query_routes as soql

        if len(segs) == 2:
            return 200, soql.query_more(state, segs[1], version), {}
        batch = None
        opts = headers.get("Sforce-Query-Options") or headers.get("sforce-query-options") or ""
        bm = re.search(r"batchSize=(\d+)", opts)
        if bm:
            batch = int(bm.group(1))
        q = query.get("q")
        if not q:
            raise SalesforceApiError(400, "MALFORMED_QUERY", "The q parameter is required")
        return 200, soql.run_query(state, q, include_deleted=segs[0] == "queryAll", version=version,
                                   batch_size=batch), {}
    if segs[:2] == ["composite", "sobjects"]:
        return 200, _collections(state, method, segs[2:], query, body, who, version), {}
    if segs == ["limits"] and method == "GET":
        return 200, limits_body(state), {}
    raise not_found()


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject")
    return body


def _collections(state: Any, method: str, segs: list[str], query: dict[str, str], body: Any, who: str,
                 version: str) -> Any:
    org: Org = state.org
    if not segs and method == "POST":
        return collection_create(org, body, who)
    if not segs and method == "PATCH":
        return collection_update(org, body, who)
    if not segs and method == "DELETE":
        return collection_delete(org, _split_ids(query.get("ids")), _bool(query.get("allOrNone")), who)
    if len(segs) == 1 and method == "GET":
        return collection_retrieve(org, segs[0], _split_ids(query.get("ids")), _split_ids(query.get("fields")),
                                   version)
    if len(segs) == 1 and method == "POST":
        b = _obj(body)
        return collection_retrieve(org, segs[0], list(b.get("ids") or []), list(b.get("fields") or []), version)
    if len(segs) == 2 and method == "PATCH":
        return collection_upsert(org, segs[0], segs[1], body, who)
    raise not_found()


# ------------------------------------------------------------------------------------------ composite
class _BadReference(Exception):
    pass


def _lookup_path(value: Any, path: str) -> Any:
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if token.startswith("["):
            idx = int(token[1:-1])
            if not isinstance(value, list) or idx >= len(value):
                raise _BadReference
            value = value[idx]
        else:
            if not isinstance(value, dict) or token not in value:
                raise _BadReference
            value = value[token]
    return value


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF_RE.fullmatch(value)
        if whole:
            return _ref(whole, results)
        return _REF_RE.sub(lambda m: str(_ref(m, results)), value)
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    return value


def _ref(m: re.Match[str], results: dict[str, Any]) -> Any:
    ref, path = m.group(1), m.group(2)
    if ref not in results:
        raise _BadReference(f"Invalid reference specified. No value for {ref}.{path} found in {ref}. Provided "
                            f"referenceId ('{ref}') must be a valid referenceId of a previous subrequest.")
    try:
        return _lookup_path(results[ref], path)
    except _BadReference:
        raise _BadReference(f"Invalid reference specified. No value for {ref}.{path} found in {ref}.") from None


def run_composite(state: Any, body: Any, who: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", "compositeRequest is required")
    subs = body["compositeRequest"]
    if not subs:
        raise SalesforceApiError(400, "INVALID_INPUT", "compositeRequest must not be empty")
    if len(subs) > MAX_SUBREQUESTS:
        raise SalesforceApiError(400, "LIMIT_EXCEEDED",
                                 f"Composite request limit of {MAX_SUBREQUESTS} subrequests exceeded: {len(subs)}")
    heavy = sum(1 for s in subs if isinstance(s, dict) and re.search(r"/(query|queryAll|composite/sobjects)(/|\?|$)",
                                                                     str(s.get("url", ""))))
    if heavy > MAX_QUERY_OR_COLLECTION:
        raise SalesforceApiError(400, "LIMIT_EXCEEDED", f"Composite request may contain at most "
                                 f"{MAX_QUERY_OR_COLLECTION} query or sObject Collections subrequests: {heavy}")
    refs = [s.get("referenceId") for s in subs if isinstance(s, dict)]
    if len(refs) != len(subs) or any(not isinstance(r, str) or not r for r in refs) or len(set(refs)) != len(refs):
        raise SalesforceApiError(400, "INVALID_INPUT", "Each subrequest needs a unique referenceId")
    all_or_none = _bool(body.get("allOrNone"))
    org: Org = state.org
    results: dict[str, Any] = {}
    out: list[dict[str, Any] | None] = [None] * len(subs)
    halted = False
    with state.lock, org.transaction(mixed_dml=True) as txn:
        for i, sub in enumerate(subs):
            ref = sub["referenceId"]
            try:
                url = _resolve(str(sub.get("url", "")), results)
                sub_body = _resolve(sub.get("body"), results)
                with org.transaction():
                    status, rbody, rheaders = dispatch(state, str(sub.get("method", "GET")), url, sub_body, who,
                                                       dict(sub.get("httpHeaders") or {}))
            except _BadReference as exc:
                status, rbody, rheaders = 400, [{"errorCode": "PROCESSING_HALTED", "message": str(exc)}], {}
            except SalesforceApiError as exc:
                status, rbody, rheaders = exc.status, exc.body(), {}
            out[i] = {"body": rbody, "httpHeaders": rheaders, "httpStatusCode": status, "referenceId": ref}
            if status < 300:
                results[ref] = rbody
            elif all_or_none:
                halted = True
                for j in range(len(subs)):
                    if j != i:
                        out[j] = {"body": [{"errorCode": "PROCESSING_HALTED", "message": HALTED}], "httpHeaders": {},
                                  "httpStatusCode": 400, "referenceId": subs[j]["referenceId"]}
                break
        if halted:
            org.rollback(txn)
    return {"compositeResponse": out}


def composite_routes(state: Any) -> list[BaseRoute]:
    async def composite(request: Request) -> JSONResponse:
        body = await json_body(request)
        return JSONResponse(run_composite(state, body, actor(request)))

    async def collections(request: Request) -> JSONResponse:
        version = request.path_params["version"]
        segs = [s for s in (request.path_params.get("rest") or "").split("/") if s]
        body = await json_body(request) if request.method in ("POST", "PATCH") else None
        query = dict(request.query_params)
        with state.lock:
            result = _collections(state, request.method, segs, query, body, actor(request), version)
        return JSONResponse(result)

    return [
        Route("/composite", composite, methods=["POST"]),
        Route("/composite/sobjects", collections, methods=["GET", "POST", "PATCH", "DELETE"]),
        Route("/composite/sobjects/{rest:path}", collections, methods=["GET", "POST", "PATCH", "DELETE"]),
    ]
