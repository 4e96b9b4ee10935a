"""`sync.transfer_ownership`: after a revocation, the leaver's open records get new owners (and, if the mapping says
so, their licences are reclaimed). On the sync lane, so it never delays the next leaver's revocation.

The task re-reads Graph (events are hints): a user enabled again meanwhile, or disabled but on leave of absence,
keeps their records; an enabled user marked as having left the mapping's scope (`shared.offboarding.scope`) does
not. Otherwise it reads the inputs (`shared.offboarding.reader`), computes the plan (`shared.offboarding.plan`, the
same function `idsync offboard --dry-run` shows) and executes it (`shared.offboarding.executor`). Safe to run twice,
and after a killed worker: see the executor's docstring.

One run per leaver at a time: duplicate follow-ups (several hints for one leaver) would otherwise read the same
records and both move them. A Redis lock names the task id holding it; a redelivery of the same message (its worker
was killed) takes the lock over at once, any other task for the user defers until the holder is done or its lock
has expired (the hard time limit: a task that old is dead).

Without an `offboarding:` section in the mapping the transfer stays pending (`idsync status` counts it), so that
configuring rules later and running `idsync offboard UPN` can still place those records.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from shared.audit import audit
from shared.entra_status import read_entra_user
from shared.events import IdentityEvent
from shared.grants import Grants
from shared.limiter import SYNC_PAUSE_RECHECK_S
from shared.offboarding.executor import OwnershipTransfer
from shared.offboarding.mapping_access import current_mapping
from shared.offboarding.reader import read_offboarding
from shared.offboarding.scope import offboarding_state
from shared.redis_lock import RedisLock
from workers.base import IdentityTask

LOCK_PREFIX = "idsync:offboarding:lock"
#: How long a busy leaver's second transfer waits before it looks again.
BUSY_RECHECK_S = 15.0

def _lock_key(entra_id: str) -> str:
    return f"{LOCK_PREFIX}:{entra_id}"


def acquire(redis: Any, entra_id: str, holder: str, ttl_s: int) -> bool:
    """Take the user's transfer lock for `holder` (a task id); a holder that already owns it takes it again."""
    return RedisLock(redis, _lock_key(entra_id), ttl_s * 1000, token=holder).acquire()


def release(redis: Any, entra_id: str, holder: str) -> None:
    RedisLock(redis, _lock_key(entra_id), 0, token=holder).release()


@shared_task(base=IdentityTask, bind=True, name="sync.transfer_ownership")
def transfer_ownership(self: IdentityTask, event: dict[str, Any]) -> str:
    ctx = self.ctx
    if ctx.limiter.sync_paused():
        self.defer(SYNC_PAUSE_RECHECK_S, "sync_paused")
    evt = IdentityEvent.from_message(event)
    links, redis, entra_id, cid = ctx.links, ctx.redis, evt.object_id, evt.correlation_id
    link = links.get_link(entra_id)
    sf_user_id = link.sf_user_id if link else None
    links.add_pending_transfer(entra_id, sf_user_id, cid)
    mapping = current_mapping(ctx.settings)
    if mapping is None or mapping.offboarding is None:
        audit(redis, "transfer_ownership", entra_id, sf_user_id, "pending", cid,
              reason="no offboarding section in the mapping: records stay with the leaver", source_event=evt.id)
        return "transfer_pending"

    holder = str(self.request.id or evt.id)
    if not acquire(redis, entra_id, holder, int(ctx.settings.task_time_limit_s) + 30):
        self.defer(BUSY_RECHECK_S, "transfer_running")
    try:
        graph, sf = ctx.graph(self.lane), ctx.salesforce(self.lane)
        state = offboarding_state(redis, entra_id, read_entra_user(graph, entra_id))
        inputs = read_offboarding(sf, graph, links, Grants(redis), mapping, entra_id, state=state)
        run = OwnershipTransfer(sf, redis, links, Grants(redis), mapping, correlation_id=cid, source_event=evt.id)
        report = run.run(inputs)
    finally:
        release(redis, entra_id, holder)
    links.complete_transfer(entra_id)
    leaver = inputs.leaver
    audit(redis, "transfer_ownership", entra_id, leaver.sf_user_id or sf_user_id, report.outcome, cid,
          upn=leaver.upn, source_event=evt.id, entra_status=state.status,
          **{k: v for k, v in report.to_dict().items() if k != "outcome"})
    return report.outcome
