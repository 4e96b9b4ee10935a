"""`idsync audit ...`: verify, export and report on the hash-chained audit trail; `idsync audit-writer` runs the writer.

The commands read the trail back from a sink (the JSONL files by default, `--sink postgres` for the database), never
from Redis: what an auditor checks is what was delivered.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ops import components
from ops.cli.app import app, console, stop_on_signals
from ops.cli.app import settings as _settings
from ops.cli.errors import check_output_or_exit, fail
from shared.settings import Settings

audit_app = typer.Typer(help="Verify, export and report on the audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

SINKS_READABLE = ("jsonl", "postgres")
SinkOpt = Annotated[str, typer.Option("--sink", help="read the trail from: jsonl (default) or postgres")]
DirOpt = Annotated[Path | None, typer.Option("--dir", help="JSONL trail directory (default IDSYNC_AUDIT_DIR or "
                                                           "var/audit)")]


def _check_output(path: Path | None, formats: tuple[str, ...] | None) -> None:
    """Before reading the trail: a file that could not be written there is one line and exit 2 (nothing created)."""
    if path is not None:
        check_output_or_exit(path, "--output", formats)


def _entries(settings: Settings, sink: str, directory: Path | None) -> list[Any]:
    """The trail as held by `sink`, in the sink's order; unreadable lines stay in place as problems."""
    from shared.audit_chain import parse_lines

    if sink == "jsonl":
        from shared.audit_sinks.jsonl import read_lines, trail_files

        where = directory or settings.audit_trail_dir
        if not trail_files(where):
            raise fail(f"no audit trail in {where} (is `idsync audit-writer` running with the jsonl sink?)")
        return parse_lines(read_lines(where))
    if sink == "postgres":
        if not settings.audit_postgres_url:
            raise fail("IDSYNC_AUDIT_POSTGRES_URL is not set")
        from shared.audit_sinks.postgres import read_lines as read_rows

        try:
            return parse_lines(read_rows(settings.audit_postgres_url.get_secret_value()))
        except Exception as err:  # noqa: BLE001 - one line for the operator, whatever the driver raised
            raise fail(f"PostgreSQL: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    raise fail(f"--sink must be one of {', '.join(SINKS_READABLE)}")


KeyFilesOpt = Annotated[list[Path] | None, typer.Option(
    "--key-file", help="also accept checkpoints signed with the key in this file (a key rotated out); repeatable")]


def _keys(settings: Settings, extra: list[Path] | None = None) -> list[bytes]:
    from shared.audit_chain import AuditKeyMissing, load_key

    secret = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
    keys = []
    for path in extra or []:
        try:
            keys.append(path.read_text().strip().encode("utf-8"))
        except OSError as err:
            raise fail(f"--key-file {path}: {err.strerror}") from None
    try:
        keys.insert(0, load_key(secret, settings.var_dir))
    except AuditKeyMissing as err:
        if not keys:
            raise fail(f"cannot check checkpoint signatures: {err}") from None
    return keys


def parse_when(text: str | None) -> float | None:
    """An ISO date/time (UTC unless it says otherwise) or a duration back from now: '7d', '12h', '30m'."""
    if text is None:
        return None
    from ops.cli.dlq import _DURATION

    if _DURATION.match(text.strip()):
        from ops.cli.dlq import parse_duration

        return time.time() - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a date/time like 2026-11-30T08:00 nor a duration like 7d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# ---------------------------------------------------------------------------------------------------- verify
@audit_app.command("verify")
def verify_cmd(sink: SinkOpt = "jsonl", directory: DirOpt = None, key_files: KeyFilesOpt = None) -> None:
    """Check every hash, link and signed checkpoint; name each edited, deleted, inserted or reordered entry."""
    from shared.audit_chain import verify

    settings = _settings()
    keys = _keys(settings, key_files)
    verdict = verify(_entries(settings, sink, directory), keys)
    for problem in verdict.problems:
        typer.echo(str(problem))
    typer.echo(verdict.summary())
    if not verdict.intact:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------- export
@audit_app.command("export")
def export_cmd(
    since: Annotated[str | None, typer.Option(help="from this time (ISO, UTC) or this long ago (7d)")] = None,
    until: Annotated[str | None, typer.Option(help="before this time (ISO, UTC) or this long ago")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (chain entries) or csv (events)")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout)")] = None,
    sink: SinkOpt = "jsonl",
    directory: DirOpt = None,
) -> None:
    """Write the entries of a time range as JSON lines or CSV."""
    import sys

    from ops.audit_export import in_range, write_csv, write_jsonl
    from shared.audit_chain import Problem

    if fmt not in ("jsonl", "csv"):
        raise typer.BadParameter("--format must be jsonl or csv")
    _check_output(output, None)
    settings = _settings()
    entries = [e for e in _entries(settings, sink, directory) if not isinstance(e, Problem)]
    chosen = in_range(entries, parse_when(since), parse_when(until))
    writer = write_csv if fmt == "csv" else write_jsonl
    if output is None:
        writer(chosen, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as fh:
        count = writer(chosen, fh)
    typer.echo(f"exported {count} entries to {output}", err=True)


# ---------------------------------------------------------------------------------------------------- report
@audit_app.command("report")
def report_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="report.html or report.csv")],
    since: Annotated[str | None, typer.Option("--from", help="from this time (ISO, UTC) or this long ago")] = None,
    until: Annotated[str | None, typer.Option("--to", help="before this time (ISO, UTC) or this long ago")] = None,
    user: Annotated[str | None, typer.Option("--user", help="only this user (UPN)")] = None,
    sink: SinkOpt = "jsonl",
    directory: DirOpt = None,
    key_files: KeyFilesOpt = None,
) -> None:
    """Per user: access granted and revoked, when, latency from the Entra change, and the chain entries as evidence."""
    from ops.audit_report import build, write_csv, write_html
    from shared.audit_chain import Problem, verify

    suffix = output.suffix.lower()
    _check_output(output, (".html", ".htm", ".csv"))
    settings = _settings()
    items = _entries(settings, sink, directory)
    verdict = verify(items, _keys(settings, key_files))
    entries = [e for e in items if not isinstance(e, Problem)]
    start, end = parse_when(since), parse_when(until)
    users = build(entries, start, end, user)
    if suffix == ".csv":
        write_csv(users, output)
    else:
        scope = (f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the {sink} sink · period "
                 f"{_day(start) or 'start of trail'} – {_day(end) or 'now'}" + (f" · user {user}" if user else ""))
        write_html(users, output, title="idsync audit report", verdict=verdict.summary(), intact=verdict.intact,
                   scope=scope)
    changes = sum(len(u.changes) for u in users)
    typer.echo(f"wrote {output}: {len(users)} user(s), {changes} access change(s); {verdict.summary()}")


def _day(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------------- writer
@app.command("audit-writer")
def audit_writer() -> None:
    """Run the single audit writer: chain the workers' audit events, sign checkpoints, deliver to every sink.

    Several may run; one leads (a Redis lock), the others wait and take over within 15 s if it dies.
    """
    from shared.audit_chain import load_key
    from shared.audit_sinks import build_sink
    from shared.audit_writer import AuditWriter
    from shared.logging import configure_logging, get_logger
    from shared.metrics_server import serve

    settings = _settings()
    configure_logging(settings)
    redis = components.redis_client(settings)
    secret = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
    key_file = settings.var_dir / "audit.key"
    generated = secret is None and not key_file.exists()
    key = load_key(secret, settings.var_dir, create=True)
    if generated:
        console.print(f"audit: checkpoint key generated in {key_file} (set IDSYNC_AUDIT_HMAC_KEY in production)",
                      markup=False)
    sinks = {}
    for name in settings.audit_sinks:
        try:
            sinks[name] = build_sink(name, settings)
        except Exception as err:  # noqa: BLE001 - a misconfigured sink is one line for the operator
            raise fail(f"audit sink {name}: {err}") from None
    serve(settings.metrics_port_audit_writer, settings.metrics_host)
    get_logger("idsync.audit.writer").info("audit_writer_started", sinks=list(sinks),
                                           trail_dir=str(settings.audit_trail_dir) if "jsonl" in sinks else None)
    AuditWriter.from_settings(redis, settings, sinks, key).run(stop_on_signals())
