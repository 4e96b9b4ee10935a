"""The `idsync` command: run everything, run one component, inspect, and operate the dead-letter queue.

Every command reads the same settings (IDSYNC_* variables, `.env`, and `var/run.env` written by a running
`idsync run`), so a second terminal in the same directory talks to the same Redis without extra flags.
One module per group of commands; importing them here registers them on `app`.
"""

from __future__ import annotations

from ops.cli import audit, dlq, inspect, service  # noqa: F401 - registers the commands
from ops.cli.app import app
from ops.cli.dlq import parse_duration

__all__ = ["app", "main", "parse_duration"]


def main() -> None:  # pragma: no cover - console entry convenience
    app(prog_name="idsync")
