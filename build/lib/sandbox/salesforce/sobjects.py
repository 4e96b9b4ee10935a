"""sObject REST resources: list, describe, create, retrieve, update, delete and upsert by external id (§3.2).

Routes are relative to `/services/data/v{version}` and sit behind `ApiGuard` (see `sandbox.salesforce.api`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.salesforce.api import SalesforceApiError
from sandbox.salesforce.org import MultipleMatches, Org
from sandbox.salesforce.schema import ObjectDef


def record_url(version: str, sobject: str, rid: str) -> str:
    return f"/services/data/v{version}/sobjects/{sobject}/{rid}"


def render(od: ObjectDef, rec: dict[str, Any], version: str, fields: list[str] | None = None) -> dict[str, Any]:
    """A record as the REST API shows it: `attributes` first, then the fields in describe order."""
    out: dict[str, Any] = {"attributes": {"type": od.name, "url": record_url(version, od.name, rec["Id"])}}
    if fields is None:
        out.update(rec)
    else:
        for name in fields:
            f = od.field(name)
            if f is None:
                raise SalesforceApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{od.name}'. If you "
                                         "are attempting to use a custom field, be sure to append the '__c' after the "
                                         "custom field name.", [name])
            out[f.name] = rec[f.name]
    return out


def parse_fields(request: Request) -> list[str] | None:
    raw = request.query_params.get("fields")
    if not raw:
        return None
    return [f.strip() for f in raw.split(",") if f.strip()]


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", "The request body is empty.")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SalesforceApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise SalesforceApiError(400, "JSON_PARSER_ERROR",
                                 "Cannot deserialize instance of sObject from START_ARRAY value")
    return body


def actor(request: Request) -> str:
    return request.scope["sf_session"].user_id


def sobject_routes(state: Any) -> list[BaseRoute]:
    def org() -> Org:
        return state.org

    async def list_sobjects(request: Request) -> JSONResponse:
        base = f"/services/data/v{request.path_params['version']}"
        return JSONResponse({
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [od.summary(base) for od in org().schema.values()],
        })

    async def sobject_root(request: Request) -> Response:
        o = org()
        od = o.require_object(request.path_params["sobject"])
        version = request.path_params["version"]
        if request.method == "GET":
            return JSONResponse({"objectDescribe": od.summary(f"/services/data/v{version}"), "recentItems": []})
        body = await json_object(request)
        rid = o.insert(od.name, body, actor=actor(request))
        return JSONResponse({"id": rid, "success": True, "errors": []}, status_code=201,
                            headers={"Location": record_url(version, od.name, rid)})

    async def describe(request: Request) -> JSONResponse:
        od = org().require_object(request.path_params["sobject"])
        return JSONResponse(od.describe(f"/services/data/v{request.path_params['version']}"))

    async def record(request: Request) -> Response:
        o = org()
        version = request.path_params["version"]
        sobject, rid = request.path_params["sobject"], request.path_params["rid"]
        if request.method == "GET":
            with state.lock:
                od, rec = o.find(sobject, rid)
                if od.name in ("UserLicense", "PermissionSetLicense"):
                    rec = o._with_usage(od.name, rec)
                return JSONResponse(render(od, rec, version, parse_fields(request)))
        if request.method == "PATCH":
            body = await json_object(request)
            o.update(sobject, rid, body, actor=actor(request))
            return Response(status_code=204)
        o.delete(sobject, rid, actor=actor(request))
        return Response(status_code=204)

    async def by_external_id(request: Request) -> Response:
        o = org()
        version = request.path_params["version"]
        od = o.require_object(request.path_params["sobject"])
        field, value = request.path_params["field"], request.path_params["value"]
        if request.method == "PATCH":
            body = await json_object(request)
            update_only = request.query_params.get("updateOnly", "").lower() == "true"
            try:
                rid, created = o.upsert(od.name, field, value, body, actor=actor(request), update_only=update_only)
            except MultipleMatches as exc:
                return JSONResponse([record_url(version, od.name, i) for i in exc.ids], status_code=300)
            return JSONResponse({"id": rid, "success": True, "errors": [], "created": created},
                                status_code=201 if created else 200,
                                headers={"Location": record_url(version, od.name, rid)} if created else None)
        with state.lock:
            ids = o.lookup(od, field, value)
            if len(ids) > 1:
                return JSONResponse([record_url(version, od.name, i) for i in ids], status_code=300)
            if not ids:
                raise SalesforceApiError(404, "NOT_FOUND", "The requested resource does not exist")
            if request.method == "DELETE":
                o.delete(od.name, ids[0], actor=actor(request))
                return Response(status_code=204)
            return JSONResponse(render(od, o.live[od.name][ids[0]], version, parse_fields(request)))

    return [
        Route("/sobjects", list_sobjects, methods=["GET"]),
        Route("/sobjects/{sobject}", sobject_root, methods=["GET", "POST"]),
        Route("/sobjects/{sobject}/describe", describe, methods=["GET"]),
        Route("/sobjects/{sobject}/{rid}", record, methods=["GET", "PATCH", "DELETE"]),
        Route("/sobjects/{sobject}/{field}/{value:path}", by_external_id, methods=["GET", "PATCH", "DELETE"]),
    ]
