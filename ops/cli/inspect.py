"""Commands that look: `status` (what an on-call admin asks first) and `health` (for container healthchecks)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.service import BEAT_HEARTBEAT_KEY
from ops.time_display import ago, iso, when, with_iso_times


# ---------------------------------------------------------------------------- status
@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Per lane: waiting, running, retrying, parked, dead-lettered; delta checkpoints, subscriptions, API usage."""
    from ops.status import collect

    settings = _settings()
    data = collect(settings, components.redis_client(settings))
    if as_json:
        typer.echo(json.dumps(with_iso_times(data), indent=2, default=str))
        return
    _print_status(data)


def _delta_error(outcome: dict[str, Any] | None) -> str:
    """The last error of a delta resource, and how many rounds failed since the last success."""
    error = (outcome or {}).get("last_error")
    if not error:
        return ""
    failing = outcome.get("consecutive_failures", 0) if outcome else 0
    streak = f"FAILING: {failing} rounds in a row; " if failing else ""
    return f"\n{streak}last error {when(error.get('time'))}: {error['class']}: {error['message']}"


def _print_provisioning(prov: dict[str, Any]) -> None:
    """Joiners and movers: which mapping, whether an edit was refused, and the sync backlog."""
    mapping = prov.get("mapping")
    if not mapping:
        line = "mapping: none loaded yet (joiners and movers need IDSYNC_MAPPING_FILE; sandbox: examples/mapping.yaml)"
    else:
        line = f"mapping: {mapping.get('path')} (loaded {when(mapping.get('loaded_at'))})"
        if mapping.get("last_error"):
            line += f" · LAST EDIT REFUSED {when(mapping.get('error_at'))}, previous mapping kept: " \
                    f"{mapping['last_error'][:300]}"
    backlog = f"sync backlog: {prov.get('backlog', 0)} users waiting, {prov.get('backlog_in_flight', 0)} in a batch"
    if prov.get("backlog_oldest_age_s") is not None:
        backlog += f", oldest {prov['backlog_oldest_age_s']:.1f} s"
    if prov.get("waiting_for_licence"):
        backlog += f" · WAITING FOR A LICENCE SEAT: {prov['waiting_for_licence']} users (retried every 10 min)"
    console.print(Text(line), soft_wrap=True)
    console.print(backlog, markup=False)


def _print_guard(guard: dict[str, Any]) -> None:
    """Held deactivations first and in red: a scope mistake freezes people out of Salesforce until someone decides."""
    runs = guard.get("held_runs") or []
    if not runs:
        return
    table = Table(title=f"DEACTIVATIONS HELD by the mass-deprovisioning guard: {guard.get('held_users', 0)} users "
                        "frozen, not deactivated", title_style="bold red", border_style="red")
    for col in ("run", "mode", "users", "held since", "reason"):
        table.add_column(col, overflow="fold")
    for run in runs:
        table.add_row(run["run_id"], run["mode"], str(run["count"]), when(run["held_at"]), Text(run["reason"]))
    console.print(table)
    console.print("decide: `idsync held RUN_ID` (who), then `idsync approve RUN_ID` (deactivate them) or "
                  "`idsync reject RUN_ID` (a mistake: deactivate nobody)", markup=False, style="red", soft_wrap=True)


def _print_reconcile(rec: dict[str, Any]) -> None:
    """The last reconciliation runs, one line each, and the one in progress or cut short."""
    for run in rec.get("recent") or []:
        counts = run.get("counts") or {}
        what = ", ".join(f"{k} {counts.get(k, 0)}" for k in ("create", "update", "deprovision", "review"))
        state = run.get("status", "?")
        if state == "running":
            state = "RUNNING" if rec.get("running") else "CUT SHORT (resumes on `idsync reconcile` or the next " \
                                                         "scheduled run)"
        line = f"reconcile {run['run_id']}: {state}, started {when(run.get('started_at'))}: {what}"
        guard = run.get("guard")
        if isinstance(guard, dict) and guard.get("held"):
            line += f" · {guard.get('deprovisions')} DEACTIVATIONS HELD: `idsync approve {run['run_id']}`"
        console.print(Text(line), soft_wrap=True)
    if rec.get("next_at"):
        console.print(f"next scheduled reconciliation {when(rec['next_at'])}", markup=False)


def _print_status(data: dict[str, Any]) -> None:
    _print_guard(data.get("guard") or {})
    lanes = Table(title="Lanes")
    for col in ("lane", "waiting", "oldest waiting (s)", "running", "retrying", "parked", "dead-lettered",
                "dropped by DLQ cap"):
        lanes.add_column(col)
    for lane, info in data["lanes"].items():
        oldest = "-" if info["oldest_age_s"] is None else f"{info['oldest_age_s']:.1f}"
        dropped = str(info["dlq_dropped"])
        if info["dlq_dropped"]:
            dropped += f" (last {ago(info['dlq_last_dropped_at'])})"
        lanes.add_row(lane, str(info["depth"]), oldest, str(info["running"]), str(info["retrying"]),
                      str(info["parked"]), str(info["dlq"]), dropped)
    console.print(lanes)
    console.print(f"review items {data['reviews']} (`idsync review list`) · "
                  f"pending ownership transfers {data['pending_ownership_transfers']}", markup=False)
    _print_provisioning(data.get("provisioning") or {})
    _print_reconcile(data.get("reconcile") or {})

    sources = Table(title="Producers")
    for col in ("source", "state"):
        sources.add_column(col)
    for resource, last in data["delta"].items():
        state = "no round yet" if not last else (
            f"last round {when(last.get('time'))}: {last.get('events', 0)} events, {last.get('pages', 0)} pages, "
            f"{last.get('resyncs', 0)} resyncs")
        state += _delta_error(data.get("delta_outcome", {}).get(resource))
        sources.add_row(f"delta {resource}", Text(state))  # Text: an error message is not Rich markup
    for sub in data["subscriptions"]:
        expires = f"expires in {sub['expires_in_s'] / 3600:.1f} h"
        sources.add_row(f"subscription {sub['resource']}", f"{sub['id']}, {expires}")
    if not data["subscriptions"]:
        sources.add_row("subscriptions", "none recorded (is `idsync beat` running?)")
    console.print(sources)

    api = data["api"]
    usage = api.get("sf_api_usage")
    throttled = {svc: keys for svc, keys in api.get("throttled_for_s", {}).items() if keys}
    console.print(
        "API: Salesforce daily usage "
        + ("unknown yet" if not usage else f"{usage['used']:,}/{usage['total']:,} ({usage['share']:.1%})")
        + (" · sync PAUSED (revocation continues)" if api.get("sync_paused") else "")
        + (f" · throttled: {throttled}" if throttled else " · not throttled"),
        markup=False,
    )

    trail = data.get("audit") or {}
    if trail:
        sinks = ", ".join(f"{name} {info['backlog']} behind" if info["backlog"] else f"{name} up to date"
                          for name, info in trail["sinks"].items())
        stalled = " (is `idsync audit-writer` running?)" if trail["inbox_oldest_age_s"] > 60 else ""
        console.print(f"audit trail: {trail['head_seq']} entries chained, {trail['inbox_pending']} waiting for the "
                      f"writer{stalled} · {sinks}", markup=False)

    revocations = Table(title="Recent revocations (newest first)")
    for col in ("time (UTC)", "ago", "UPN", "Entra id", "Salesforce id", "outcome"):
        revocations.add_column(col, overflow="fold")
    for rev in data["recent_revocations"]:
        revocations.add_row(iso(rev["ts"], timespec="seconds"), ago(rev["ts"]), str(rev.get("upn") or "-"),
                            str(rev["entra_id"]), str(rev["sf_user_id"] or "-"), rev["outcome"])
    console.print(revocations)


@app.command()
def health(component: Annotated[str, typer.Argument(help="redis, poller or beat")] = "redis") -> None:
    """Exit 0 when the component looks alive (for container healthchecks), else 1 with the reason."""
    import time

    settings = _settings()
    redis = components.redis_client(settings)
    try:
        redis.ping()
    except Exception as err:  # noqa: BLE001 - any failure is "unhealthy", said in one line
        console.print(f"unhealthy: redis: {type(err).__name__}", markup=False)
        raise typer.Exit(1) from None
    if component == "poller":
        from producers.checkpoints import DeltaCheckpoints
        from producers.poller_health import poller_problem

        checkpoints = DeltaCheckpoints(redis, settings.graph_tenant_id or "default")
        problem = poller_problem(checkpoints, settings.delta_interval_s)
        if problem is not None:
            console.print(f"unhealthy: poller: {problem}", markup=False, soft_wrap=True)  # one line
            raise typer.Exit(1)
    elif component == "beat":
        last, limit = redis.get(BEAT_HEARTBEAT_KEY), 30.0
        if last is None or time.time() - float(last) > limit:
            console.print(f"unhealthy: no {component} heartbeat within {limit:.0f}s", markup=False)
            raise typer.Exit(1)
    elif component != "redis":
        raise typer.BadParameter("component must be redis, poller or beat")
    console.print("healthy", markup=False)


