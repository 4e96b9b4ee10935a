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

from ops.cli import config, dlq, inspect, service  # noqa: F401 - registers the commands
from ops.cli.app import app
from ops.cli.dlq import parse_duration

__all__ = ["app", "main", "parse_duration"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; an expected failure (settings, Redis, Graph/Salesforce, files) exits with one line."""
    from ops.cli.errors import report

    try:
        app(args=list(argv) if argv is not None else None, prog_name="idsync")
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the boundary: every failure is answered in one line
        sys.exit(report(err))
