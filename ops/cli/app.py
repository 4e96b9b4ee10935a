"""The root `idsync` Typer app and what every command shares: the console, settings access and common options.

Command modules (`ops/cli/*.py`) attach their commands to `app`; `ops/cli/__init__.py` imports them all.
"""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from rich.console import Console

from shared.settings import Settings, get_settings

app = typer.Typer(help="idsync: Entra ID -> Salesforce joiners, movers and leavers.", no_args_is_help=True)
console = Console()

LaneOpt = Annotated[str | None, typer.Option("--lane", help="revocation or sync (default: both)")]


def settings() -> Settings:
    return get_settings()


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT/SIGTERM, for the long-running loops (poller, beat)."""
    import signal

    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
