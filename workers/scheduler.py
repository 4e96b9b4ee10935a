"""The scheduler loop: moves parked messages (`shared/parking.py`) back to their queues when they are due.

Run one or more next to the workers (leases are taken atomically, so several schedulers never republish a message
twice, and a scheduler that dies holding leases only delays those messages until the lease expires):

    python -m workers.scheduler

A message keeps its task id and retry count, so the task's retry budget and delivery counter carry on; it goes out
through `shared.dispatch.republish` (task name checked against the dispatch table, fresh `published_at`). A message
leaves the parking set only after its republish returned; if the republish fails (broker briefly away), it is parked
again under its original due time and retried on the next pass.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from shared import parking
from shared.dispatch import UnknownTask, republish
from shared.dlq import DeadLetter, DeadLetterQueue
from shared.logging import get_logger

log = get_logger("idsync.scheduler")

BATCH = 100


def run_once(
    app: Any, redis: Any, now: float | None = None, limit: int = BATCH, dlq: DeadLetterQueue | None = None
) -> int:
    """Republish due messages; returns how many were republished.

    A message naming a task the dispatch table no longer knows (renamed in an upgrade) can never be republished:
    it goes to `dlq` where an operator sees it, instead of coming back every pass (kept parked when no `dlq`).
    """
    now = time.time() if now is None else now
    requeued = parking.requeue_expired(redis, now)
    if requeued:
        log.warning("parked_messages_requeued", count=requeued)
    moved = 0
    for message in parking.lease_due(redis, now, limit):
        try:
            republish(
                app,
                message.task,
                message.args,
                message.kwargs,
                message.headers,
                task_id=message.task_id or message.id,
                retries=message.retries,
            )
        except UnknownTask as exc:
            if dlq is None:
                parking.release(redis, message)
            else:
                dlq.put(_dead_letter(message, str(exc)))
                parking.ack(redis, message)
            log.error("parked_message_unknown_task", task=message.task, task_id=message.task_id)
            continue
        except Exception as exc:
            parking.release(redis, message)
            log.warning(
                "parked_message_republish_failed", task=message.task, task_id=message.task_id, error=str(exc)
            )
            continue
        parking.ack(redis, message)
        moved += 1
        log.info(
            "parked_message_republished",
            task=message.task,
            task_id=message.task_id,
            queue=message.queue,
            late_s=round(time.time() - message.due_at, 3),
        )
    return moved


def _dead_letter(message: parking.ParkedMessage, error: str) -> DeadLetter:
    return DeadLetter(
        id=message.task_id or message.id,
        task=message.task,
        args=message.args,
        kwargs=message.kwargs,
        headers=message.headers,
        lane=message.queue,
        error_class="UnknownTask",
        error_message=error,
        correlation_id=message.headers.get("idsync_correlation_id"),
        event_id=message.headers.get("event_id"),
    )


def run_forever(
    app: Any,
    redis: Any,
    stop_event: threading.Event,
    interval: float = 1.0,
    dlq: DeadLetterQueue | None = None,
    keeper: Any = None,
) -> None:
    """Loop until `stop_event` is set; a full batch is followed at once by the next, otherwise wait `interval`.
    `keeper` (workers.backlog_keeper.BacklogKeeper) is ticked on every pass."""
    while not stop_event.is_set():
        try:
            if keeper is not None:
                keeper.tick()
            moved = run_once(app, redis, dlq=dlq)
        except Exception as exc:  # Redis away: keep the loop alive, try again after the interval
            log.error("scheduler_pass_failed", error=str(exc))
            moved = 0
        if moved < BATCH:
            stop_event.wait(interval)


def main() -> None:
    from shared.logging import configure_logging
    from shared.redis_conn import get_redis
    from shared.settings import get_settings
    from workers.app import create_app

    settings = get_settings()
    configure_logging(settings)
    app = create_app(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("scheduler_started")
    redis = get_redis(str(settings.redis_url))
    dlq = DeadLetterQueue(redis, settings.dlq_max_entries, settings.dlq_max_age_days * 86400.0)
    run_forever(app, redis, stop, dlq=dlq)


if __name__ == "__main__":
    main()
