"""Keeps the sync backlog moving, from beat: leases of dead workers come back, a lost drain is replaced, users
waiting for a licence seat are tried again, and the mapping file is watched (a refused edit shows in
`idsync status` within seconds, even while no batch runs; workers reload on their next batch).

Why here: a drain task is scheduled by whoever marks a user dirty, with a flag that expires; if that message is lost
(a broker restart between flag and send) or a worker dies holding a batch, nothing else would ever look at those
users. Beat runs exactly this check every few seconds, which bounds the delay to seconds.
"""

from __future__ import annotations

import time
from typing import Any

from shared.dirty_users import DirtyUsers
from shared.dispatch import schedule_drain
from shared.logging import get_logger

log = get_logger("idsync.backlog")

LICENCE_BLOCKED_KEY = "idsync:sync:licence_blocked"
#: Users whose creation Salesforce refused for lack of a seat are tried again this often (a seat may have freed).
LICENCE_RETRY_S = 600.0
CHECK_EVERY_S = 5.0


class BacklogKeeper:
    def __init__(self, app: Any, redis: Any, tenant: str, mappings: Any = None) -> None:
        self.mappings = mappings
        self.app = app
        self.redis = redis
        self.tenant = tenant
        self.backlog = DirtyUsers(redis)
        self._checked = 0.0
        self._licences_checked = time.monotonic()

    def tick(self, now: float | None = None) -> None:
        """Cheap enough for every scheduler pass; does its work every `CHECK_EVERY_S`."""
        mono = time.monotonic() if now is None else now
        if mono - self._checked < CHECK_EVERY_S:
            return
        self._checked = mono
        if self.mappings is not None:
            from shared.provisioning.mapping_store import NoMapping

            try:
                self.mappings.current()
            except NoMapping:
                pass  # recorded in status by the store; nothing to keep moving for joiners and movers
        returned = self.backlog.requeue_expired()
        if returned:
            log.warning("backlog_leases_expired", users=returned)
        if mono - self._licences_checked >= LICENCE_RETRY_S:
            self._licences_checked = mono
            blocked = [str(u) for u in self.redis.zrange(LICENCE_BLOCKED_KEY, 0, -1)]
            if blocked:
                self.backlog.mark(blocked)
                log.info("backlog_licence_retry", users=len(blocked))
        if self.backlog.pending() and schedule_drain(self.app, self.backlog, self.tenant):
            log.info("backlog_drain_scheduled", pending=self.backlog.pending())
