"""Commands that look: `status` (what an on-call admin asks first) and `health` (for container healthchecks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.service import BEAT_HEARTBEAT_KEY


# ---------------------------------------------------------------------------- status
@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Lane depth and oldest message age, DLQ size, delta checkpoints, subscriptions, API usage."""
    from ops.status import collect

    settings = _settings()
    data = collect(settings, components.redis_client(settings))
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    _print_status(data)


def _ago(ts: float | None) -> str:
    import time

    if not ts:
        return "never"
    return f"{datetime.fromtimestamp(ts, UTC).strftime('%H:%M:%S')} UTC ({time.time() - ts:.0f} s ago)"


def _print_status(data: dict[str, Any]) -> None:
    lanes = Table(title="Lanes")
    for col in ("lane", "waiting", "oldest waiting (s)", "dead-lettered"):
        lanes.add_column(col)
    for lane, info in data["lanes"].items():
        oldest = "-" if info["oldest_age_s"] is None else f"{info['oldest_age_s']:.1f}"
        lanes.add_row(lane, str(info["depth"]), oldest, str(info["dlq"]))
    console.print(lanes)
    console.print(f"in flight {data['in_flight']} · parked {data['parked']} · review items {data['reviews']} · "
                  f"pending ownership transfers {data['pending_ownership_transfers']}", markup=False)

    sources = Table(title="Producers")
    for col in ("source", "state"):
        sources.add_column(col)
    for resource, last in data["delta"].items():
        state = "no round yet" if not last else (
            f"last round {_ago(last.get('time'))}: {last.get('events', 0)} events, {last.get('pages', 0)} pages, "
            f"{last.get('resyncs', 0)} resyncs")
        sources.add_row(f"delta {resource}", state)
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
    for col in ("time (UTC)", "Entra id", "Salesforce id", "outcome"):
        revocations.add_column(col, overflow="fold")
    for rev in data["recent_revocations"]:
        when = datetime.fromtimestamp(rev["ts"], UTC).strftime("%H:%M:%S")
        revocations.add_row(when, str(rev["entra_id"]), str(rev["sf_user_id"] or "-"), rev["outcome"])
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
    if component in ("poller", "beat"):
        if component == "poller":
            from producers.checkpoints import DeltaCheckpoints

            last_round = DeltaCheckpoints(redis, settings.graph_tenant_id or "default").last_round("users")
            last, limit = (last_round or {}).get("time"), 3 * settings.delta_interval_s + 60
        else:
            last, limit = redis.get(BEAT_HEARTBEAT_KEY), 30.0
        if last is None or time.time() - float(last) > limit:
            console.print(f"unhealthy: no {component} heartbeat within {limit:.0f}s", markup=False)
            raise typer.Exit(1)
    elif component != "redis":
        raise typer.BadParameter("component must be redis, poller or beat")
    console.print("healthy", markup=False)


