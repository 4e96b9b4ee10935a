"""The root `idsync` Typer app and what every command shares: the console, settings access and common options.

Command modules (`ops/cli/*.py`) attach their commands to `app`; `ops/cli/__init__.py` imports them all.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Annotated, Literal

import typer
from rich.console import Console

from shared.settings import Settings, checked_settings

PIPED_WIDTH = 160
app = typer.Typer(help="idsync: Entra ID -> Salesforce joiners, movers and leavers.", no_args_is_help=True)
#: A terminal's own width; piped or redirected output (a log file, `| less`, `| grep`) is not wrapped at rich's
#: default of 80 columns, which cut review messages and table titles mid-word (COLUMNS still wins when set).
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH)

#: `--lane` everywhere: a wrong lane is refused by the parser with the valid choices, before anything runs.
#: The same names as shared.dispatch.LANES (a test keeps them equal; a Literal cannot be built from a tuple).
Lane = Literal["revocation", "sync"]
LaneOpt = Annotated[Lane | None, typer.Option("--lane", help="revocation or sync (default: both)")]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("idsync")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"idsync {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """idsync: Entra ID -> Salesforce joiners, movers and leavers."""


def settings() -> Settings:
    """This process's settings, checked for deployment (a bad one raises SettingsError: one line, exit 2)."""
    return checked_settings()


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT/SIGTERM, for the long-running loops (poller, beat)."""
    import signal

    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
