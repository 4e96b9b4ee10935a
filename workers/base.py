"""`IdentityTask`: the one base class of every idsync task, and the single owner of cross-cutting concerns.

Task bodies only decide and act; everything about *what happens when it goes wrong* lives here (as in PyPI's
Warehouse, `warehouse/tasks.py`), so both lanes fail the same, documented way:

- delivery counter (`before_start`): Redis has no delivery count, and with `task_reject_on_worker_lost` a message
  that kills its worker comes back for ever. `INCR idsync:deliveries:{task_id}:{retries}`; past
  `settings.max_deliveries` the message is dead-lettered as "PoisonMessage" and ignored
  (docs/decisions.md#late-acks-and-poison-messages).
- structlog contextvars: event_id, correlation_id, task_id, lane and task are bound for every line the task logs.
  The correlation id is read from the event argument: the `correlation_id` message header is shadowed by Celery's
  own AMQP property of that name (which holds the task id).
- error classification (`__call__`): `RetryableError` -> exponential backoff with full jitter, at least the server's
  `retry_after`; a delay longer than `settings.park_threshold_s` is parked in Redis (never a long countdown, which
  Redis would redeliver after the visibility timeout); after `settings.max_retries` -> DLQ. `PermanentError` and any
  unexpected exception -> DLQ at once. Also retryable (`TRANSIENT_ERRORS`): a timeout (`SoftTimeLimitExceeded`), a
  broker error while publishing a follow-up (kombu's `OperationalError`) and a dropped or slow Redis connection
  (redis-py's `ConnectionError`/`TimeoutError`, e.g. during a Redis restart or failover): all transient by nature
  and still bounded by `max_retries`. Every DLQ write happens before the message is dropped (on Redis a `Reject`
  just deletes it), including when the retry republish itself fails.
- attempt history: each failed attempt of a task id is recorded (`shared.dlq.AttemptLog`), so a dead letter shows
  when the trouble started and what every attempt hit. Recording is best effort: it must never turn a retry into a
  failure of its own.
- one log line per execution (`task_finished`: task, outcome, attempts, duration_ms).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import celery
import kombu.exceptions
import redis.exceptions
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from structlog.contextvars import bind_contextvars, clear_contextvars

from shared import metrics, parking
from shared.dispatch import lane_of
from shared.dlq import MAX_HISTORY, Attempt, AttemptLog, DeadLetter, format_traceback, trim_traceback
from shared.errors import RetryableError
from shared.logging import get_logger
from workers import context

log = get_logger("idsync.task")

DELIVERIES_PREFIX = "idsync:deliveries"
#: A delivery counter must outlive every redelivery path (visibility timeout + sweep delay); a day is ample.
MIN_DELIVERY_TTL_S = 86_400

#: Errors worth another attempt (see the module docstring); everything else but `Deferred` is dead-lettered at once.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RetryableError,
    SoftTimeLimitExceeded,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class Deferred(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a task body (via `IdentityTask.defer`) to come back later without counting as a failure."""

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason


def backoff_delay(retries: int, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff (AWS style), but never shorter than the server's Retry-After.

    After a Retry-After, a little jitter goes on top: every worker that was told to wait would otherwise wake at the
    same instant and hit the service together (a thundering herd the limiter would then have to absorb).
    """
    delay = random.uniform(0, min(max_s, base_s * (2**retries)))
    if retry_after is not None:
        delay = max(delay, float(retry_after) + random.uniform(0, min(1.0, base_s)))
    return delay


class IdentityTask(celery.Task):
    """Base for `revocation.*` and `sync.*` tasks (bind=True). Retries are counted here, not by Celery."""

    max_retries = None  # `settings.max_retries` is enforced in `_on_retryable`; Celery must never raise first.
    typing = True

    # --- conveniences for task bodies ---------------------------------------------------------------------------

    @property
    def lane(self) -> str:
        return lane_of(self.name)

    @property
    def ctx(self) -> context.WorkerContext:
        return context.get()

    def defer(self, delay_s: float, reason: str) -> None:
        """Park this message for `delay_s` seconds (e.g. sync paused); it is republished as a new message."""
        raise Deferred(delay_s, reason)

    # --- Celery hooks -------------------------------------------------------------------------------------------

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.request.idsync_started = time.monotonic()
        self._bind_log_context(task_id, args, kwargs)
        deliveries = self._count_delivery(task_id)
        limit = self.ctx.settings.max_deliveries
        if deliveries > limit:
            message = f"delivered {deliveries} times (limit {limit}): it killed its worker or outlived its timeout"
            self._dead_letter("PoisonMessage", message, "", args, kwargs, attempts=deliveries)
            self._finish("poison_message", level="error", deliveries=deliveries)
            raise Ignore()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return self.run(*args, **kwargs)
        self._bind_log_context(self.request.id, args, kwargs)
        try:
            try:
                result = self.run(*args, **kwargs)
            except Deferred as deferred:
                self._defer(args, kwargs, deferred)
            except (Retry, Ignore, Reject):
                raise
            except TRANSIENT_ERRORS as exc:
                self._on_retryable(exc, args, kwargs)
            except Exception as exc:
                self._dead_letter(type(exc).__name__, str(exc), format_traceback(exc), args, kwargs)
                self._finish("dead_lettered", level="error", error_class=type(exc).__name__, error=str(exc))
                raise Ignore() from None
            outcome = result if isinstance(result, str) else "ok"
            if self.request.retries:
                self._forget_attempts()
            self._finish(outcome)
            return result
        finally:
            clear_contextvars()

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Only reached by what escapes `__call__`: a hard time limit (reported by the worker's main process) or an
        error inside `before_start` itself. Dead-letter it; never let a handler error hide the original one."""
        try:
            self._bind_log_context(task_id, args, kwargs)
            tb = trim_traceback(str(einfo.traceback)) if einfo is not None else ""
            self._dead_letter(type(exc).__name__, str(exc), tb, args, kwargs)
            self._finish("dead_lettered", level="error", error_class=type(exc).__name__, error=str(exc))
        except Exception:
            log.exception("dead_letter_write_failed", task=self.name, task_id=task_id)
        finally:
            clear_contextvars()

    # --- retry / park / dead-letter -------------------------------------------------------------------------------

    def _on_retryable(self, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Always raises: Retry (a short countdown), or Ignore after parking or dead-lettering."""
        settings = self.ctx.settings
        retries = int(self.request.retries or 0)
        error_class = type(exc).__name__
        if retries >= settings.max_retries:
            self._dead_letter(error_class, str(exc), format_traceback(exc), args, kwargs)
            self._finish("dead_lettered", level="error", error_class=error_class, error=str(exc), reason="max_retries")
            raise Ignore() from None
        self._record_attempt(error_class, str(exc))
        delay = backoff_delay(
            retries, settings.backoff_base_s, settings.backoff_max_s, getattr(exc, "retry_after", None)
        )
        if delay > settings.park_threshold_s:
            self._park(args, kwargs, delay, task_id=self.request.id, retries=retries + 1)
            self._finish("parked", level="warning", delay_s=round(delay, 3), error_class=error_class, error=str(exc))
            raise Ignore() from None
        # A fresh `published_at`: the retry is a new message in the queue; its age starts now, not at the first publish.
        headers = {**(self.request.headers or {}), "published_at": f"{time.time():.3f}"}
        try:
            self.retry(exc=exc, countdown=delay, throw=True, headers=headers)
        except Retry:
            self._finish("retry", level="warning", delay_s=round(delay, 3), error_class=error_class, error=str(exc))
            raise
        except Reject as rejected:
            # The republish failed; Celery would now drop the message (Reject on Redis deletes). Keep it instead.
            message = f"retry publish failed ({rejected.reason!r}) after: {exc}"
            self._dead_letter(error_class, message, format_traceback(exc), args, kwargs, recorded=True)
            self._finish("dead_lettered", level="error", error_class=error_class, reason="retry_publish_failed")
            raise Ignore() from None

    def _defer(self, args: tuple[Any, ...], kwargs: dict[str, Any], deferred: Deferred) -> None:
        """A new task id: a deferral is not a failure, so it must not use up the delivery or retry budget.

        If parking itself fails (Redis briefly away), the message is retried like any transient error: a deferral
        must never end in the DLQ because of the reason it was deferred for.
        """
        try:
            self._park(
                args,
                kwargs,
                deferred.delay_s,
                task_id=uuid.uuid4().hex,
                retries=int(self.request.retries or 0),
                extra_headers={"deferred_from": self.request.id},
            )
        except TRANSIENT_ERRORS as exc:
            self._on_retryable(exc, args, kwargs)
        self._finish("parked", reason=deferred.reason, delay_s=deferred.delay_s)
        raise Ignore()

    def _park(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        delay_s: float,
        *,
        task_id: str,
        retries: int,
        extra_headers: dict[str, Any] | None = None,
    ) -> None:
        parking.park(
            self.ctx.redis,
            self.name,
            list(args),
            dict(kwargs),
            {**self._headers(args, kwargs), **(extra_headers or {})},
            self.lane,
            time.time() + delay_s,
            task_id=task_id,
            retries=retries,
        )

    def _dead_letter(
        self,
        error_class: str,
        message: str,
        tb: str,
        args: Any,
        kwargs: Any,
        attempts: int | None = None,
        recorded: bool = False,
    ) -> None:
        """`recorded`: this failure is already in the attempt log (do not list it twice)."""
        event = _event_of(args, kwargs) or {}
        now = time.time()
        history = self._take_attempts()
        if not recorded or not history:
            history.append(Attempt.now(error_class, message))
        history = history[-MAX_HISTORY:]
        entry = DeadLetter(
            id=self.request.id or uuid.uuid4().hex,
            task=self.name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            headers=self._headers(args, kwargs),
            lane=self.lane,
            error_class=error_class,
            error_message=message,
            traceback=tb,
            attempts=attempts if attempts is not None else int(self.request.retries or 0) + 1,
            first_failed_at=min([now, *(a.time for a in history)]),
            last_failed_at=now,
            correlation_id=event.get("correlation_id"),
            event_id=event.get("id"),
            history=history,
        )
        self.ctx.dlq.put(entry)

    # --- bookkeeping --------------------------------------------------------------------------------------------

    def _attempt_log(self) -> AttemptLog:
        settings = self.ctx.settings
        return AttemptLog(self.ctx.redis, max(MIN_DELIVERY_TTL_S, 3 * settings.visibility_timeout_s))

    def _record_attempt(self, error_class: str, message: str) -> None:
        if not self.request.id:
            return
        try:
            self._attempt_log().record(self.request.id, Attempt.now(error_class, message))
        except Exception as err:  # noqa: BLE001 - history is for reading; the retry itself matters more
            log.warning("attempt_not_recorded", error=type(err).__name__)

    def _take_attempts(self) -> list[Attempt]:
        if not self.request.id:
            return []
        try:
            return self._attempt_log().take(self.request.id)
        except Exception as err:  # noqa: BLE001 - a dead letter without history beats no dead letter
            log.warning("attempt_history_not_read", error=type(err).__name__)
            return []

    def _forget_attempts(self) -> None:
        try:
            self._attempt_log().forget(str(self.request.id))
        except Exception as err:  # noqa: BLE001 - the key expires on its own
            log.warning("attempt_history_not_cleared", error=type(err).__name__)

    def _count_delivery(self, task_id: str) -> int:
        settings = self.ctx.settings
        key = f"{DELIVERIES_PREFIX}:{task_id}:{int(self.request.retries or 0)}"
        pipe = self.ctx.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, max(MIN_DELIVERY_TTL_S, 3 * settings.visibility_timeout_s))
        count, _ = pipe.execute()
        return int(count)

    def _headers(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """The custom headers to republish with (replay, parking), completed from the event argument."""
        headers = dict(self.request.headers or {})
        event = _event_of(args, kwargs)
        if event:
            headers.setdefault("event_id", event.get("id"))
            headers["idsync_correlation_id"] = event.get("correlation_id")
        return {k: v for k, v in headers.items() if v is not None}

    def _bind_log_context(self, task_id: str | None, args: Any, kwargs: Any) -> None:
        event = _event_of(args, kwargs) or {}
        headers = self.request.headers or {}
        clear_contextvars()
        bind_contextvars(
            task_id=task_id,
            task=self.name,
            lane=self.lane,
            event_id=event.get("id") or headers.get("event_id"),
            correlation_id=event.get("correlation_id"),
        )

    def _finish(self, outcome: str, level: str = "info", **extra: Any) -> None:
        started = getattr(self.request, "idsync_started", None)
        duration_ms = round((time.monotonic() - started) * 1000, 1) if started else None
        getattr(log, level)(
            "task_finished",
            outcome=outcome,
            attempts=int(self.request.retries or 0) + 1,
            duration_ms=duration_ms,
            **extra,
        )
        event = _event_of(self.request.args, self.request.kwargs) or {}
        metrics.task_finished(self.name, self.lane, event.get("kind"), outcome,
                              None if duration_ms is None else duration_ms / 1000.0)


def _event_of(args: Any, kwargs: Any) -> dict[str, Any] | None:
    """The IdentityEvent message among the task arguments, if any."""
    candidates = [*(args or ()), *(kwargs or {}).values()]
    for value in candidates:
        if isinstance(value, dict) and "correlation_id" in value and "object_id" in value:
            return value
    return None
