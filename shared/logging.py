"""One log format for every process: structlog for our code, and stdlib records (celery, uvicorn) rendered the same.

Why: an operator follows one event through webhook, queue and worker by `event_id`/`correlation_id`, so every line
must be the same shape (JSON lines in production, readable console on a terminal) and carry the contextvars bound
for the current task. Secrets are masked in one processor that runs on every record, ours or foreign.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
#: A key containing any of these (case-insensitive) has its value masked, whatever the value is.
SECRET_KEY_PARTS = ("secret", "token", "password", "authorization", "client_state", "clientstate", "assertion")

_HANDLER_NAME = "idsync"


def _is_secret_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    if isinstance(value, str) and value[:7].lower() == "bearer ":
        return "Bearer " + REDACTED
    return value


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Mask secret-looking keys (at any depth), `SecretStr` values and bearer tokens before anything renders."""
    return {k: REDACTED if _is_secret_key(k) and k != "event" else _redact(v) for k, v in event_dict.items()}


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        _drop_color_message,
        redact_secrets,
    ]


def _drop_color_message(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """uvicorn attaches an ANSI-coloured copy of each message; it only doubles the line in JSON output."""
    event_dict.pop("color_message", None)
    return event_dict


def _renderer(json_lines: bool) -> Processor:
    if json_lines:
        return structlog.processors.JSONRenderer()
    # plain_traceback: rich's traceback formatter would print local variables, which may hold secrets.
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)


_FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker", "kombu")
#: Celery's own per-task lines: "Task x[id] received" (strategy) and "Task x[id] succeeded in 0.1s: result" (trace),
#: both at INFO and both repeating the task's arguments or result, i.e. event payloads. A worker's one line per task
#: is ours, `task_finished` (workers/base.py). Their warnings and errors (a task that failed) still come through.
CELERY_PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def configure_logging(settings: Any, stream: TextIO | None = None) -> None:
    """Configure structlog and the root stdlib logger; safe to call again (e.g. in a forked worker child).

    The format is JSON lines unless the output stream is a terminal; `settings.log_json` forces either way.
    Output goes to stderr by default so command output on stdout (`idsync status --json`) stays parseable.
    """
    out = stream if stream is not None else sys.stderr
    json_lines = settings.log_json if settings.log_json is not None else not _isatty(out)
    level = logging.getLevelName(str(settings.log_level).upper())
    if not isinstance(level, int):
        raise ValueError(f"IDSYNC_LOG_LEVEL: unknown level {settings.log_level!r}")

    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder before the shared chain: `extra={...}` fields of stdlib records are rendered (and redacted).
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_lines else _keep,
            _renderer(json_lines),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Servers (uvicorn, celery) install their own handlers and stop propagation; hand their records back to
    # the root handler so every line has one format and passes the redaction processor.
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
        foreign.disabled = False
        foreign.setLevel(logging.NOTSET)
    # One line per HTTP call (every Graph page, every Salesforce query) or per Celery task is noise at INFO; keep
    # it for DEBUG.
    for name in ("httpx", "httpcore", "urllib3", *CELERY_PER_TASK_LOGGERS):
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _keep(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    return event_dict


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
