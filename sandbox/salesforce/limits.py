"""`GET limits` (§3.5): the daily API allowance on the sandbox clock's rolling 24 h window, plus the other org
limits clients commonly read (Bulk API batches, Bulk 2.0 query jobs created in the window, storage), so a worker
can pace itself."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

BULK_BATCHES_MAX = 15_000
#: Bulk API 2.0 query jobs per rolling 24 h (documented in queries.htm; reported, not enforced)
BULK_QUERY_JOBS_MAX = 10_000


def limits_body(state: Any) -> dict[str, Any]:
    org = state.org
    now = state.clock.time()
    api_max = int(state.config.get("salesforce.daily_api_limit", 100_000))
    used = org.api_usage(now)
    with state.lock:
        org._prune(org.bulk_batches, now)
        batches = len(org.bulk_batches)
        org._prune(org.bulk_query_created, now)
        query_jobs = len(org.bulk_query_created)
        records = sum(len(v) for v in org.live.values())

    def lim(mx: int, remaining: int) -> dict[str, int]:
        return {"Max": mx, "Remaining": max(0, remaining)}

    return {
        "ConcurrentAsyncGetReportInstances": lim(200, 200),
        "ConcurrentSyncReportRuns": lim(20, 20),
        "DailyApiRequests": {**lim(api_max, api_max - used), "idsync": lim(0, 0)},
        "DailyAsyncApexExecutions": lim(250_000, 250_000),
        "DailyBulkApiBatches": lim(BULK_BATCHES_MAX, BULK_BATCHES_MAX - batches),
        "DailyBulkV2QueryFileStorageMB": lim(976_562, 976_562),
        "DailyBulkV2QueryJobs": lim(BULK_QUERY_JOBS_MAX, BULK_QUERY_JOBS_MAX - query_jobs),
        "DailyGenericStreamingApiEvents": lim(10_000, 10_000),
        "DailyStreamingApiEvents": lim(1_000_000, 1_000_000),
        "DataStorageMB": lim(5_120, 5_120 - records * 2 // 1024),
        "FileStorageMB": lim(20_480, 20_480),
        "HourlyODataCallout": lim(10_000, 10_000),
        "SingleEmail": lim(5_000, 5_000),
    }


def limits_routes(state: Any) -> list[BaseRoute]:
    async def limits(request: Request) -> JSONResponse:
        return JSONResponse(limits_body(state))

    return [Route("/limits", limits, methods=["GET"])]
