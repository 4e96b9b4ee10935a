"""`sync.provision_request`: an approved Salesforce request becomes an Entra account (`shared.user_requests`).

On the sync lane: it is joiner work, never urgent like a revocation. A second delivery of the same request while
the first runs (the poller's overlap, a redelivery) finds the request's lock taken and is parked for a few seconds
(never dropped: the holder may be a worker that died, whose lock expires); it then finds the request Completed, or
takes over.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from shared.events import IdentityEvent
from shared.limiter import SYNC_PAUSE_RECHECK_S
from shared.running_mapping import current_mapping
from shared.user_requests.fulfil import RequestDeps, fulfil_request
from shared.user_requests.progress import RequestBusy
from workers.base import IdentityTask

#: The request lock outlives the task's hard time limit by this much, so a killed worker's lock expires soon after.
LOCK_MARGIN_S = 30.0
#: A duplicate delivery looks again this soon at the latest (or when the lock would expire, if sooner): by then the
#: holder has usually finished and the request reads Completed.
BUSY_RECHECK_S = 5.0


@shared_task(base=IdentityTask, bind=True, name="sync.provision_request")
def provision_request(self: IdentityTask, event: dict[str, Any]) -> str:
    ctx = self.ctx
    if ctx.limiter.sync_paused():
        self.defer(SYNC_PAUSE_RECHECK_S, "sync_paused")
    evt = IdentityEvent.from_message(event)
    deps = RequestDeps(graph=ctx.graph(self.lane), salesforce=ctx.salesforce(self.lane), redis=ctx.redis,
                       mapping=current_mapping(ctx.settings),
                       lock_ttl_s=float(ctx.settings.task_time_limit_s) + LOCK_MARGIN_S)
    try:
        return fulfil_request(deps, evt.object_id, correlation_id=evt.correlation_id, source_event=evt.id)
    except RequestBusy as busy:
        self.defer(min(busy.retry_after_s, BUSY_RECHECK_S), "request_busy")
        raise AssertionError("unreachable") from busy  # defer always raises
