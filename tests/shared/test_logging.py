"""Every process logs one shape, with the task's context, and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from pydantic import SecretStr

from shared.logging import configure_logging, get_logger
from shared.settings import Settings, load_settings


def _settings(**overrides: object) -> Settings:
    return load_settings(_env_file=None, **overrides)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_level_logger_timestamp_and_bound_context() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True), stream=out)
    structlog.contextvars.bind_contextvars(event_id="e1", correlation_id="c1", task_id="t1", lane="revocation")
    get_logger("idsync.test").info("user_revoked", user="005abc")
    (line,) = _lines(out)
    assert line["event"] == "user_revoked"
    assert line["level"] == "info"
    assert line["logger"] == "idsync.test"
    assert line["user"] == "005abc"
    assert {k: line[k] for k in ("event_id", "correlation_id", "task_id", "lane")} == {
        "event_id": "e1",
        "correlation_id": "c1",
        "task_id": "t1",
        "lane": "revocation",
    }
    assert "timestamp" in line


def test_stdlib_records_from_celery_or_uvicorn_render_through_the_same_json_renderer() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True), stream=out)
    structlog.contextvars.bind_contextvars(correlation_id="c9")
    logging.getLogger("celery.worker").warning("Task %s received", "revocation.revoke_user")
    (line,) = _lines(out)
    assert line["event"] == "Task revocation.revoke_user received"
    assert line["logger"] == "celery.worker"
    assert line["level"] == "warning"
    assert line["correlation_id"] == "c9"


def test_secret_looking_keys_and_secretstr_values_are_masked_at_any_depth() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True), stream=out)
    get_logger("t").info(
        "config",
        client_secret="s3cr3t-value",
        access_token="tok-value",
        headers={"Authorization": "Bearer abc.def", "Accept": "json"},
        client_state="cs-value",
        nested=[{"password": "pw-value"}, SecretStr("hidden-value")],
        assertion="jwt-value",
        note="Bearer leaked-value",
        user="kept",
    )
    text = out.getvalue()
    for secret in (
        "s3cr3t-value",
        "tok-value",
        "abc.def",
        "cs-value",
        "pw-value",
        "hidden-value",
        "jwt-value",
        "leaked-value",
    ):
        assert secret not in text
    (line,) = _lines(out)
    assert line["client_secret"] == "***"
    assert line["headers"] == {"Authorization": "***", "Accept": "json"}
    assert line["nested"] == [{"password": "***"}, "***"]
    assert line["user"] == "kept"


def test_stdlib_extra_fields_are_rendered_and_secret_ones_masked() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True), stream=out)
    logging.getLogger("uvicorn.error").info("handshake", extra={"client_state": "cs-secret", "path": "/notify"})
    assert "cs-secret" not in out.getvalue()
    (line,) = _lines(out)
    assert line["client_state"] == "***"
    assert line["path"] == "/notify"


def test_level_from_settings_drops_lower_records_for_structlog_and_stdlib() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True, log_level="WARNING"), stream=out)
    get_logger("t").info("quiet")
    logging.getLogger("celery").info("quiet too")
    get_logger("t").warning("loud")
    assert [line["event"] for line in _lines(out)] == ["loud"]


def _celery_task_lines(task_id: str) -> None:
    """What Celery itself logs around one task (its message formats, abridged)."""
    logging.getLogger("celery.worker.strategy").info("Task %s[%s] received", "revocation.check_user", task_id)
    logging.getLogger("celery.app.trace").info("Task %s[%s] succeeded in %ss: %r", "revocation.check_user", task_id,
                                               0.1, {"object_id": "u1"})


def test_celerys_own_per_task_lines_are_dropped_at_info_so_the_one_line_per_task_is_ours() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True), stream=out)
    _celery_task_lines("t1")
    get_logger("workers.base").info("task_finished", task_id="t1", outcome="ok")
    logging.getLogger("celery.app.trace").error("Task %s[%s] raised unexpected: %r", "x", "t2", "boom")
    lines = _lines(out)
    assert [(line["event"], line["logger"]) for line in lines] == [
        ("task_finished", "workers.base"),
        ("Task x[t2] raised unexpected: 'boom'", "celery.app.trace"),  # failures still come through
    ]


def test_celerys_own_per_task_lines_come_back_at_debug() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True, log_level="DEBUG"), stream=out)
    _celery_task_lines("t1")
    assert [line["logger"] for line in _lines(out)] == ["celery.worker.strategy", "celery.app.trace"]


def test_console_format_is_used_on_a_terminal_and_json_elsewhere_unless_forced() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    configure_logging(_settings(), stream=tty)
    get_logger("t").info("hello", user="u1")
    assert not tty.getvalue().lstrip().startswith("{")
    assert "hello" in tty.getvalue() and "user=u1" in tty.getvalue()

    pipe = io.StringIO()
    configure_logging(_settings(), stream=pipe)
    get_logger("t").info("hello")
    assert _lines(pipe)[0]["event"] == "hello"

    forced = Tty()
    configure_logging(_settings(log_json=True), stream=forced)
    get_logger("t").info("hello")
    assert _lines(forced)[0]["event"] == "hello"


def test_console_tracebacks_do_not_print_local_variables_that_may_hold_secrets() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=False), stream=out)

    def fail() -> None:
        token_in_a_local = "local-secret-value"  # noqa: F841
        raise RuntimeError("boom")

    try:
        fail()
    except RuntimeError:
        get_logger("t").exception("failed")
    assert "RuntimeError: boom" in out.getvalue()
    assert "local-secret-value" not in out.getvalue()


def test_configuring_twice_installs_one_handler_not_two() -> None:
    out = io.StringIO()
    configure_logging(_settings(log_json=True), stream=io.StringIO())
    configure_logging(_settings(log_json=True), stream=out)
    get_logger("t").info("once")
    assert len(_lines(out)) == 1
    assert sum(1 for h in logging.getLogger().handlers if h.get_name() == "idsync") == 1


def test_an_unknown_level_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="IDSYNC_LOG_LEVEL"):
        configure_logging(_settings(log_level="CHATTY"), stream=io.StringIO())
