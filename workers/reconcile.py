"""`sync.reconcile`: a full reconciliation on the sync lane (scheduled by beat, or resuming a run cut short), and
`ReconcileScheduler`, the part of beat that starts one every `reconcile_interval_s`.

The task runs the same code as `idsync reconcile` (`shared.reconcile.runner`), with the sync lane's clients: the
limiter keeps its reserve for revocations, so a reconcile never slows a leaver. One run at a time (a Redis lock);
a task that finds a run in progress elsewhere returns at once. A run killed mid-way (worker killed, time limit)
is resumed by the next task: the scheduler publishes one as soon as the dead run's lock is free.
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.limiter import SYNC_PAUSE_RECHECK_S
from shared.logging import get_logger
from shared.reconcile.run_state import CURRENT_KEY, run_in_progress
from workers.base import IdentityTask

log = get_logger("idsync.reconcile")

NEXT_AT_KEY = "idsync:reconcile:next_at"
#: A resume or scheduled run published less than this long ago is not published again (the task may be queued).
PUBLISHED_KEY = "idsync:reconcile:published"
PUBLISH_GUARD_S = 120
CHECK_EVERY_S = 15.0


@shared_task(base=IdentityTask, bind=True, name="sync.reconcile")
def reconcile(self: IdentityTask, event: dict[str, Any]) -> str:
    from shared.provisioning.mapping_store import NoMapping
    from shared.reconcile.reports import ReportData, write_reports
    from shared.reconcile.run_state import RunInProgress, RunLockLost
    from shared.reconcile.runner import Options, Reconciler

    if self.ctx.limiter.sync_paused():
        self.defer(SYNC_PAUSE_RECHECK_S, "sync_paused")
    ctx = self.ctx
    ctx.redis.delete(PUBLISHED_KEY)
    deps = ctx.provisioning(self.lane, self.app)
    try:
        runlog = Reconciler(deps).run(Options(source=EventSource.WORKER))
    except RunInProgress:
        return "already_running"
    except RunLockLost:
        return "lock_lost"  # cut short, resumable: the scheduler resumes it once the lock is free
    except NoMapping:
        return "no_mapping"
    folder = ctx.settings.reconcile_reports
    folder.mkdir(parents=True, exist_ok=True)
    write_reports(ReportData.of(runlog), [folder / f"{runlog.run_id}.json", folder / f"{runlog.run_id}.html"])
    return "done"


class ReconcileScheduler:
    """Ticked by beat on every pass: publishes `sync.reconcile` when the interval is due, and at once when a run
    was cut short and nobody holds its lock any more. The first scheduled run comes one interval after beat first
    starts (a new deployment shows its plan first: `idsync reconcile --dry-run`)."""

    def __init__(self, app: Any, redis: Any, settings: Any) -> None:
        self.app = app
        self.redis = redis
        self.interval_s = float(settings.reconcile_interval_s)
        self.tenant = settings.graph_tenant_id or "default"
        self._checked = float("-inf")

    def tick(self, now: float | None = None, mono: float | None = None) -> str | None:
        """What it did: "scheduled", "resumed", or None."""
        mono = time.monotonic() if mono is None else mono
        if self.interval_s <= 0 or mono - self._checked < CHECK_EVERY_S:
            return None
        self._checked = mono
        now = time.time() if now is None else now
        running = run_in_progress(self.redis)
        next_at = self.redis.get(NEXT_AT_KEY)
        if next_at is None or running:
            self.redis.set(NEXT_AT_KEY, repr(now + self.interval_s))
            if next_at is None:
                return None
        if running:
            return None
        if self.redis.exists(CURRENT_KEY):
            return "resumed" if self._publish("resume") else None
        if now >= float(next_at):
            self.redis.set(NEXT_AT_KEY, repr(now + self.interval_s))
            return "scheduled" if self._publish("interval") else None
        return None

    def _publish(self, why: str) -> bool:
        if not self.redis.set(PUBLISHED_KEY, why, nx=True, ex=PUBLISH_GUARD_S):
            return False
        publish(self.app, IdentityEvent(kind=EventKind.RECONCILE, source=EventSource.WORKER, tenant=self.tenant,
                                        object_id="reconcile"))
        log.info("reconcile_scheduled", why=why)
        return True


class Keepers:
    """Several beat-side keepers ticked as one (`workers.scheduler.run_forever` takes one)."""

    def __init__(self, *keepers: Any) -> None:
        self.keepers = keepers

    def tick(self) -> None:
        for keeper in self.keepers:
            keeper.tick()
