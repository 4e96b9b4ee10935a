"""`idsync reconcile`: compare every Entra user with Salesforce, show the plan, and (unless `--dry-run`) apply it.

Runs in this process with the sync lane's clients and write path (`shared.reconcile.runner`), exactly the code the
scheduled `sync.reconcile` task runs; a run cut short (Ctrl-C, a crash) is resumed by the next `idsync reconcile` or
the next scheduled run. `--report PATH` (several allowed) writes the report; the format follows the extension
(`.html`, `.csv`, `.json`). A real run also keeps its JSON and HTML report in `IDSYNC_RECONCILE_REPORT_DIR`
(default var/reconcile). `idsync access report` lists who holds what in Salesforce and which rule justifies it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.errors import check_output_or_exit, fail

access_app = typer.Typer(help="Who holds what in Salesforce, and which rule justifies it.", no_args_is_help=True)
app.add_typer(access_app, name="access")

#: Reports kept in the report directory (the oldest go first).
KEEP_REPORTS = 30


class _ProgressView:
    """Phase, counts, rate and ETA on an interactive terminal (rich); silent otherwise."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.live = console.is_terminal
        self.progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>10}"), TimeRemainingColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[counts]}"), console=console, transient=False,
                                 disable=not self.live)
        self.task = self.progress.add_task("starting", total=None, rate="", counts="")
        self.phase_started = self.last_update = time.monotonic()
        self.phase = ""

    def __enter__(self) -> _ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, p: Any) -> None:
        now = time.monotonic()
        if p.phase != self.phase:
            # the phase began when the previous one last reported (its first page took time to read)
            self.phase, self.phase_started = p.phase, self.last_update
        self.last_update = now
        elapsed = now - self.phase_started
        rate = f"{p.done / elapsed:,.0f}/s" if p.done and elapsed > 0.2 else ""
        counts = " ".join(f"{k} {v}" for k, v in p.counts.items() if v and k in ("create", "update", "deprovision",
                                                                                   "review"))
        self.progress.update(self.task, description=p.phase, completed=p.done, total=p.total, rate=rate,
                             counts=counts)


def _keep_reports(folder: Path) -> None:
    reports = sorted(folder.glob("rec-*.json"))
    for old in reports[:-KEEP_REPORTS]:
        for suffix in (".json", ".html"):
            old.with_suffix(suffix).unlink(missing_ok=True)


def _print_plan(data: Any) -> None:
    """A dry run prints every change (grouped by user) and review item; then the counts."""
    from rich.markup import escape

    current = None
    for row in data.rows("changes"):
        if row["entra_id"] != current:
            current = row["entra_id"]
            console.print(f"[bold]{escape(str(row.get('upn') or row['entra_id']))}[/bold] "
                          f"[dim]{row['action']}[/dim]")
        before, after = row.get("before"), row.get("after")
        if row.get("change") == "create_user" and isinstance(after, dict):
            # the new user in one line: who, and what they get (the reports carry every field)
            shown = [after.get("Username")] + [f"{k}={after[k]}" for k in ("ProfileId", "UserRoleId") if after.get(k)]
            after = " ".join(str(part) for part in shown if part)
        edit = " [red](direct Salesforce edit)[/red]" if row.get("direct_edit") else ""
        console.print(f"  {escape(str(row['field']))}: {escape(repr(before))} -> {escape(repr(after))}{edit}",
                      highlight=False)
    for row in data.rows("reviews"):
        console.print(f"[yellow]review[/yellow] {escape(str(row.get('message')))}", highlight=False)


#: The items counted across users (`totals`), as the summary names them: "review items" are questions for a person
#: on any user's plan, not the `review` count of users whose whole plan waits for a person.
TOTAL_LABELS = {"changes": "changes", "direct_edits": "direct Salesforce edits", "reviews": "review items",
                "failures": "failures"}


def summary_rows(summary: dict[str, Any]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(users per plan, by the JSON report's `counts` keys; items, by `TOTAL_LABELS`) as the summary table shows
    them."""
    users = [(key, int(value)) for key, value in summary["counts"].items()]
    items = [(label, int(summary["totals"].get(key, 0))) for key, label in TOTAL_LABELS.items()]
    return users, items


def _print_summary(data: Any, dry_run: bool) -> None:
    from rich.table import Table

    s = data.summary()
    users, items = summary_rows(s)
    table = Table(title=f"reconciliation {s['run_id']}" + (" (dry run: nothing written)" if dry_run else ""))
    table.add_column("users by plan")
    table.add_column("count", justify="right")
    for key, value in users:
        table.add_row(key, str(value))
    table.add_section()
    for label, value in items:
        table.add_row(f"[dim]{label}[/dim]", str(value))
    console.print(table)
    if s["counts"].get("review") or s["totals"].get("reviews"):
        console.print("[dim]review: users whose whole plan waits for a person (nothing is written for them); review "
                      "items: each question for a person, on any user's plan (a user being updated can carry one)"
                      "[/dim]", soft_wrap=True)
    guard = s.get("guard")
    if isinstance(guard, dict) and guard.get("held"):
        console.print(f"[yellow]{guard.get('deprovisions')} deactivations are HELD by the mass-deprovisioning guard "
                      f"(users frozen, not deactivated): `idsync approve {s['run_id']}` or "
                      f"`idsync reject {s['run_id']}`[/yellow]")


@app.command("reconcile")
def reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan only: write nothing anywhere, print every change")
                       ] = False,
    report: Annotated[list[Path] | None, typer.Option("--report", help="write the report here (.html, .csv or "
                                                      ".json; repeat for several)")] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="only members of this Entra group (name or id; "
                                                    "repeat for several)")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="discard a run that was cut short instead of resuming "
                                          "it")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no per-change listing on a dry run")] = False,
) -> None:
    """Reconcile every user: a plan from THE engine, drift reports, writes in resumable chunks on the sync lane."""
    from ops.cli.sync_user import provisioning_deps
    from shared.output_files import OutputPathError
    from shared.provisioning.mapping_store import NoMapping
    from shared.reconcile.reports import ReportData, check_paths
    from shared.reconcile.run_state import RunInProgress, RunLockLost
    from shared.reconcile.runner import Options, ReconcileError, Reconciler

    paths = list(report or [])
    try:
        check_paths(paths)  # before the run: a report that cannot be written stops nothing half-way
    except OutputPathError as err:
        raise fail(str(err)) from None
    settings = _settings()
    deps = provisioning_deps(settings, with_sender=not dry_run)
    view = _ProgressView()
    reconciler = Reconciler(deps, on_progress=view.update)
    try:
        with view:
            runlog = reconciler.run(Options(dry_run=dry_run, scope=list(scope or []), restart=restart))
    except RunInProgress as err:
        raise fail(f"{err} — wait for it (`idsync status`), it holds the lock while it works", 3) from None
    except RunLockLost as err:
        raise fail(str(err), 1) from None
    except (ReconcileError, NoMapping) as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        raise fail("interrupted: the run stops here; `idsync reconcile` resumes it at its next chunk", 130) from None
    data = ReportData.of(runlog)
    if dry_run and not quiet:
        _print_plan(data)
    _print_summary(data, dry_run)
    _write_all(data, settings, paths, dry_run)
    if data.totals.get("failures"):
        raise typer.Exit(1)


def _write_all(data: Any, settings: Any, paths: list[Path], dry_run: bool) -> None:
    """The run's own copies in the report directory first (a real run), then the reports asked for. A write that
    fails anyway (the disk filled up, a directory removed meanwhile) does not stop the others; the one line then says
    the run completed and which report was not written."""
    from ops.cli.errors import os_error_hint
    from shared.reconcile.reports import write_reports

    targets = list(paths)
    if not dry_run:
        folder = settings.reconcile_reports
        own = [folder / f"{data.runlog.run_id}.json", folder / f"{data.runlog.run_id}.html"]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # the writes below fail and say so
        targets = own + targets
    failed: list[str] = []
    for path in targets:
        try:
            write_reports(data, [path])
        except OSError as err:
            failed.append(f"{path} was not written: {err.strerror or err} — {os_error_hint(err)}")
            continue
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
    if not dry_run:
        _keep_reports(settings.reconcile_reports)
    if failed:
        done = "the dry run completed" if dry_run else f"the run {data.runlog.run_id} completed"
        raise fail(f"{done}, but {'; '.join(failed)}", 1)


def access_summary(data: Any) -> str:
    """The access report in one line, from the same rows as its table: each figure is a count of row statuses or of
    the users those rows belong to."""
    by_status = data.by_status
    return (f"{data.user_count} Salesforce users, {data.grant_count} entitlements: {data.justified} justified by a "
            f"rule, {data.unjustified} no rule justifies ({by_status.get('granted_by_hand', 0)} granted by hand, "
            f"{by_status.get('pending_removal', 0)} pending removal, {by_status.get('out_of_scope', 0)} out of scope, "
            f"{by_status.get('entra_disabled', 0)} Entra account disabled, {by_status.get('no_entra_user', 0)} no "
            f"Entra user); {len(data.out_of_scope)} users out of scope holding entitlements, {len(data.disabled)} "
            "linked users disabled in Entra")


@access_app.command("report")
def access_report(
    output: Annotated[Path, typer.Option("--output", "-o", help="PATH.html or PATH.csv")],
) -> None:
    """Every Salesforce user's profile, role, permission sets (and groups), licences, public groups and queues, with
    the Entra group and mapping rule that justifies each; hand-granted entitlements, out-of-scope holders and
    disabled Entra accounts listed apart. Reads only."""
    from ops.cli.sync_user import provisioning_deps
    from shared.provisioning.mapping_store import NoMapping
    from shared.reconcile.access import write_access_report

    check_output_or_exit(output, "--output", (".html", ".csv"))
    settings = _settings()
    deps = provisioning_deps(settings, with_sender=False)
    try:
        data = write_access_report(deps, output)
    except NoMapping as err:
        raise fail(str(err)) from None
    console.print(access_summary(data), highlight=False)
    console.print(f"report: {output}", highlight=False, soft_wrap=True)
