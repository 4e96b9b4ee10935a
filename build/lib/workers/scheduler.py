"""The scheduler loop: moves parked messages (`shared/parking.py`) back to their queues when they are due.

Run one or more next to the workers (`pop_due` is atomic, so several schedulers never republish a message twice):

    python -m workers.scheduler

A message keeps its task id and retry count, so the task's retry budget and delivery counter carry on. If the
republish fails (broker briefly away), the message is parked again under its original due time and retried on
the next pass.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from shared import parking
from shared.logging import get_logger

log = get_logger("idsync.scheduler")

BATCH = 100


def run_once(app: Any, redis: Any, now: float | None = None, limit: int = BATCH) -> int:
    """Republish due messages; returns how many were republished."""
    moved = 0
    for message in parking.pop_due(redis, time.time() if now is None else now, limit):
        try:
            app.send_task(
                message.task,
                args=message.args,
                kwargs=message.kwargs,
                queue=message.queue,
                headers=message.headers,
                task_id=message.task_id,
                retries=message.retries,
            )
        except Exception as exc:
            parking.park_message(redis, message)
            log.warning(
                "parked message not republished; kept", task=message.task, task_id=message.task_id, error=str(exc)
            )
            continue
        moved += 1
        log.info(
            "parked message republished",
            task=message.task,
            task_id=message.task_id,
            queue=message.queue,
            late_s=round(time.time() - message.due_at, 3),
        )
    return moved


def run_forever(app: Any, redis: Any, stop_event: threading.Event, interval: float = 1.0) -> None:
    """Loop until `stop_event` is set; a full batch is followed at once by the next, otherwise wait `interval`."""
    while not stop_event.is_set():
        try:
            moved = run_once(app, redis)
        except Exception as exc:  # Redis away: keep the loop alive, try again after the interval
            log.error("scheduler pass failed", error=str(exc))
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
    log.info("scheduler started")
    run_forever(app, get_redis(str(settings.redis_url)), stop)


if __name__ == "__main__":
    main()
