"""`idsync dlq ...`: inspect, replay and purge the dead-letter queue.

Times show as ISO 8601 in UTC and relative ("3 min ago"); `--json` prints them as ISO 8601 strings too.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.table import Table

from ops import components
from ops.cli.app import LaneOpt, app, console
from ops.cli.app import settings as _settings
from ops.cli.errors import EXIT_UNAVAILABLE, fail
from ops.time_display import iso, when, with_iso_times
from shared.settings import Settings

dlq_app = typer.Typer(help="Inspect and replay the dead-letter queue.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


# ---------------------------------------------------------------------------- dead-letter queue
def _dlq(settings: Settings) -> Any:
    from shared.dlq import DeadLetterQueue

    return DeadLetterQueue(components.redis_client(settings), settings.dlq_max_entries,
                           settings.dlq_max_age_days * 86400)


def _unknown(entry_id: str) -> typer.Exit:
    """An id that names no dead letter: bad input (exit 2), one line on stderr."""
    return fail(f"no dead letter {entry_id!r} (`idsync dlq list` lists them)")


@dlq_app.command("list")
def dlq_list(
    lane: LaneOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 100,
) -> None:
    """List dead-lettered messages."""
    entries = _dlq(_settings()).list(lane=lane, limit=limit)
    if as_json:
        typer.echo(json.dumps([with_iso_times(e.model_dump(mode="json")) for e in entries], indent=2))
        return
    table = Table(title=f"Dead letters ({len(entries)})")
    for col in ("id", "lane", "task", "error", "attempts", "first failure", "last failure", "correlation"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.id, e.lane, e.task, f"{e.error_class}: {e.error_message[:80]}", str(e.attempts),
                      when(e.first_failed_at), when(e.last_failed_at), str(e.correlation_id or ""))
    console.print(table)


@dlq_app.command("show")
def dlq_show(entry_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one entry in full: the error, every recorded attempt, the message, and the traceback as lines."""
    entry = _dlq(_settings()).get(entry_id)
    if entry is None:
        raise _unknown(entry_id)
    if as_json:
        typer.echo(json.dumps(with_iso_times(entry.model_dump(mode="json")), indent=2))
        return
    rows = [
        ("id", entry.id),
        ("task", f"{entry.task} (lane {entry.lane})"),
        ("error", f"{entry.error_class}: {entry.error_message}"),
        ("attempts", str(entry.attempts)),
        ("first failure", when(entry.first_failed_at)),
        ("last failure", when(entry.last_failed_at)),
        ("correlation id", entry.correlation_id or "-"),
        ("event id", entry.event_id or "-"),
        ("args", _one_line(entry.args)),
        ("kwargs", _one_line(entry.kwargs)),
        ("headers", _one_line(entry.headers)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    lines.append(f"attempts recorded (last {len(entry.history)}, oldest first):" if entry.history else "attempts: -")
    lines += [f"  {iso(a.time, timespec='seconds')}  {a.error_class}: {a.message}" for a in entry.history]
    lines.append("traceback:" if entry.traceback else "traceback: -")
    lines += [f"  {line}" for line in entry.traceback.splitlines()]
    typer.echo("\n".join(lines))


def _one_line(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), default=str)


@dlq_app.command("replay")
def dlq_replay(
    entry_id: Annotated[str | None, typer.Argument(help="entry id (or --all)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="replay every entry (of --lane)")] = False,
    lane: LaneOpt = None,
) -> None:
    """Republish entries to their lane; an entry leaves the DLQ only after its republish succeeded."""
    from workers.replay import replay, replay_all

    settings = _settings()
    if bool(entry_id) == all_:
        raise typer.BadParameter("give an entry id or --all")
    celery, dlq = components.celery_app(settings), _dlq(settings)
    if all_:
        ok, failed = replay_all(celery, dlq, lane=lane)
        _audit_replay(settings, None, "replayed" if not failed else "partial", replayed=ok, failed=failed, lane=lane)
        console.print(f"replayed {ok}, failed {failed}", markup=False)
        raise typer.Exit(1 if failed else 0)
    assert entry_id is not None  # exactly one of ENTRY_ID and --all, checked above
    entry = dlq.get(entry_id)
    if entry is None:
        raise _unknown(entry_id)
    if not replay(celery, dlq, entry_id):
        # known a moment ago: another replay holds it (or has just replayed it)
        raise fail(f"{entry_id}: not replayed: another replay holds it or has just replayed it (`idsync dlq list`)",
                   EXIT_UNAVAILABLE)
    _audit_replay(settings, entry, "replayed", entry_id=entry_id)
    console.print(f"{entry_id}: replayed", markup=False)


def _audit_replay(settings: Settings, entry: Any, outcome: str, **detail: Any) -> None:
    """A replay is an operator action on identities: it goes into the audit trail with the operator as actor."""
    from shared.audit import audit
    from shared.audit_events import operator_actor

    event = (entry.args[0] if entry is not None and entry.args and isinstance(entry.args[0], dict) else {})
    audit(components.redis_client(settings), "dlq_replay", event.get("object_id"), None, outcome,
          getattr(entry, "correlation_id", None), actor=operator_actor(), source_event=getattr(entry, "event_id", None),
          task=getattr(entry, "task", None), **detail)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> float:
    """'90' or '90s', '15m', '12h', '7d' -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 12h or 7d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@dlq_app.command("purge")
def dlq_purge(
    older_than: Annotated[str, typer.Option("--older-than", help="e.g. 7d, 12h, 30m")],
    lane: LaneOpt = None,
) -> None:
    """Delete entries older than the given age."""
    removed = _dlq(_settings()).purge(parse_duration(older_than), lane=lane)
    console.print(f"purged {removed}", markup=False)


