"""The sandbox Salesforce org, served at the sandbox base URL as if it were the org's My Domain.

`install(state)` creates `state.org` and returns the routes: the OAuth token endpoint, the versions list and,
under `Mount("/services/data/v{version}")` guarded by `sandbox.salesforce.api.ApiGuard`, the REST data API
(sObjects, SOQL query, composite, collections, limits, Bulk API 2.0 ingest and query jobs).
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from sandbox.salesforce.api import MAX_VERSION, MIN_VERSION, ApiGuard
from sandbox.salesforce.org import Org


def _versions(state: Any) -> Route:
    async def versions(request: Request) -> JSONResponse:
        """`GET /services/data/` lists the versions; unauthenticated, like the real org."""
        out = []
        v = MIN_VERSION
        while v <= MAX_VERSION:
            out.append({"label": f"v{v:.1f}", "url": f"/services/data/v{v:.1f}", "version": f"{v:.1f}"})
            v += 1.0
        return JSONResponse(out)

    return Route("/services/data", versions, methods=["GET"])


def data_routes(state: Any) -> list[BaseRoute]:
    """The versioned REST routes (relative to `/services/data/v{version}`)."""
    from sandbox.salesforce import bulk, bulk_query, composite, limits, sobjects

    routes: list[BaseRoute] = []
    routes += sobjects.sobject_routes(state)
    routes += composite.composite_routes(state)
    routes += limits.limits_routes(state)
    routes += bulk.bulk_routes(state)
    routes += bulk_query.bulk_query_routes(state)
    try:
        from sandbox.salesforce.query_routes import query_routes
    except ModuleNotFoundError:  # the SOQL module is built by another helper; the org still serves CRUD without it
        pass
    else:
        routes += query_routes(state)
    return routes


def install(state: Any) -> list[BaseRoute]:
    from sandbox.salesforce import oauth

    state.org = Org(clock=state.clock, config=state.config, lock=state.lock)
    state.org.faults = state.faults
    # Every record written through the API is counted (`sf_write`, and per object and operation), so a test can
    # prove that a dry run wrote nothing at all.
    state.org.on_write = lambda sobject, operation: (state.activity.count("sf_write"),
                                                     state.activity.count(f"sf_write:{sobject}:{operation}"))
    oauth.prepare_connected_app(state)
    return [
        *oauth.oauth_routes(state),
        _versions(state),
        Route("/services/data/", _versions(state).endpoint, methods=["GET"]),
        Mount("/services/data/v{version}", routes=data_routes(state), middleware=[Middleware(ApiGuard, state=state)]),
    ]
