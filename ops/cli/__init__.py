"""The `idsync` command: run everything, run one component, inspect, and operate the dead-letter queue.

Every command reads the same settings (IDSYNC_* variables, `.env`, and `var/run.env` written by a running
`idsync run`; `idsync config` shows each value and where it came from), so a second terminal in the same directory
talks to the same Redis without extra flags. One module per group of commands; importing them here registers them
on `app`. `main()` is the entry point (console script and `python -m ops`): the one place where a failure becomes
one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from ops.cli import (  # noqa: F401 - registers the commands
    audit,
    config,
    dlq,
    guard,
    inspect,
    mapping,
    offboard,
    reconcile,
    review,
    service,
    sync_user,
)
from ops.cli.app import app
from ops.cli.dlq import parse_duration

__all__ = ["app", "main", "parse_duration"]


def _quiet_logging() -> None:
    """Before any command runs: log lines go to stderr, warnings and up only, and readable (never JSON, which is for
    the long-running components' log collectors), so a command's answer on stdout (`--json` included) is never mixed
    with them and a person at a terminal reads no JSON. The long-running components (worker, webhook, poller,
    beat...) configure their own logging from the settings when they start."""
    from types import SimpleNamespace

    from shared.logging import configure_logging

    configure_logging(SimpleNamespace(log_json=False, log_level="WARNING"))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; an expected failure (settings, Redis, Graph/Salesforce, files, usage) exits with one line.

    Click runs in non-standalone mode so that usage errors come here too, instead of being printed by Click as a
    usage block and a framed message.
    """
    from ops.cli.errors import click_exceptions, report, usage_line

    _quiet_logging()
    try:
        code = app(args=list(argv) if argv is not None else None, prog_name="idsync", standalone_mode=False)
    except SystemExit:
        raise
    except click_exceptions.NoArgsIsHelpError as err:
        err.show()  # `idsync` or `idsync dlq` alone: the help text is the answer (exit 2, as Click does)
        code = err.exit_code
    except click_exceptions.ClickException as err:
        print(usage_line(err), file=sys.stderr)
        code = err.exit_code
    except typer.Abort:
        print("idsync: aborted", file=sys.stderr)
        code = 1
    except Exception as err:  # noqa: BLE001 - the boundary: every failure is answered in one line
        code = report(err)
    sys.exit(code if isinstance(code, int) else 0)
