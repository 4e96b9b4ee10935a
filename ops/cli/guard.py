"""`idsync approve RUN_ID`, `idsync reject RUN_ID` and `idsync held [RUN_ID]`: the decisions the mass-deprovisioning
guard (`shared/deprovision_guard.py`) waits for.

A held run's users are frozen (they cannot log in) but still active; nothing of theirs is reassigned. `approve`
deactivates them through the revocation lane (each one re-checked against Entra first) and lets their ownership
transfers follow; `reject` deactivates none of them and re-plans them on the sync lane (back in scope: unfrozen; still
out: kept frozen with a review item). Both are audited with the operator as actor.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.errors import EXIT_UNAVAILABLE, fail
from ops.time_display import when, with_iso_times

RunId = Annotated[str, typer.Argument(help="the held run's id, as `idsync held` lists it")]


def _guard() -> Any:
    from shared.deprovision_guard import DeprovisionGuard

    settings = _settings()
    return DeprovisionGuard(components.redis_client(settings), settings)


def _decide(run_id: str, approve: bool) -> list[Any]:
    """The decision, or one line on stderr: exit 2 for an unknown run (bad input, like an unknown user or review
    item), 1 for a run decided the other way already."""
    from shared.audit_events import operator_actor
    from shared.deprovision_guard import GuardError, UnknownRun

    guard = _guard()
    try:
        return list((guard.approve if approve else guard.reject)(run_id, operator_actor()))
    except UnknownRun as err:
        raise fail(str(err)) from None
    except GuardError as err:
        raise fail(str(err), EXIT_UNAVAILABLE) from None


@app.command()
def approve(run_id: RunId) -> None:
    """Deactivate every user of a held run (they were frozen meanwhile); their ownership transfers follow."""
    from shared.deprovision_guard import publish_release

    users = _decide(run_id, approve=True)
    settings = _settings()
    sent = publish_release(components.celery_app(settings), users, settings.graph_tenant_id or "default")
    console.print(f"{run_id}: approved; {sent} deactivations queued on the revocation lane (each user is checked "
                  "against Entra first: anyone back in scope stays active)", markup=False, soft_wrap=True)


@app.command()
def reject(run_id: RunId) -> None:
    """Deactivate nobody of a held run: users back in scope in Entra are unfrozen, the others stay frozen (active)."""
    from shared.deprovision_guard import replan_rejected

    users = _decide(run_id, approve=False)
    settings = _settings()
    redis = components.redis_client(settings)
    sent = replan_rejected(components.celery_app(settings), redis, users, settings.graph_tenant_id or "default")
    keep_h = settings.guard_reject_keep_s / 3600
    console.print(f"{run_id}: rejected; nobody in it is deactivated. {sent} users planned again: those back in scope "
                  f"are unfrozen, the others stay frozen but active for {keep_h:g} h with a review item "
                  "(`idsync review list`)", markup=False, soft_wrap=True)


@app.command()
def held(
    run_id: Annotated[str | None, typer.Argument(help="a run id: list its users")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Runs the mass-deprovisioning guard holds (or the users of one run): who would be deactivated, and why."""
    guard = _guard()
    if run_id is None:
        runs = [vars(r) for r in guard.held_runs()]
        if as_json:
            typer.echo(json.dumps(with_iso_times(runs), indent=2))
            return
        table = Table(title=f"Held runs ({len(runs)})")
        for col in ("run", "mode", "users", "since", "reason"):
            table.add_column(col, overflow="fold")
        for run in runs:
            table.add_row(run["run_id"], run["mode"], str(run["count"]), when(run["held_at"]), run["reason"])
        console.print(table)
        return
    users = [vars(u) for u in guard.users(run_id)]
    if not users:
        raise fail(f"no held run {run_id!r} (`idsync held` lists the held runs)")
    if as_json:
        typer.echo(json.dumps(with_iso_times(users), indent=2))
        return
    table = Table(title=f"{run_id}: {len(users)} users")
    for col in ("UPN", "Entra id", "Salesforce id", "held", "rule"):
        table.add_column(col, overflow="fold")
    for user in users:
        table.add_row(user["upn"] or "-", user["entra_id"], user["sf_user_id"] or "-", when(user["held_at"]),
                      user["rule"] or "-")
    console.print(table)
