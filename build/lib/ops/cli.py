"""The `idsync` command: run everything, run one component, inspect, and operate the dead-letter queue.

Every command reads the same settings (IDSYNC_* variables, `.env`, and `var/run.env` written by a running
`idsync run`), so a second terminal in the same directory talks to the same Redis without extra flags.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ops import components
from shared.settings import Settings, SettingsError, get_settings, load_settings

app = typer.Typer(help="idsync: Entra ID -> Salesforce joiners, movers and leavers.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and replay the dead-letter queue.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console()

BEAT_HEARTBEAT_KEY = "idsync:heartbeat:beat"
LaneOpt = Annotated[str | None, typer.Option("--lane", help="revocation or sync (default: both)")]


def _settings() -> Settings:
    return get_settings()


def _stop_on_signals() -> threading.Event:
    import signal

    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


# ---------------------------------------------------------------------------- whole service
@app.command()
def run() -> None:
    """Start everything in one supervised process tree (embedded Redis and the sandbox when not configured)."""
    from ops.supervisor import Supervisor

    try:
        # Only .env and the environment: var/run.env and var/sandbox.env describe a previous run, not this one.
        settings = load_settings(_env_file=(".env",))
    except SettingsError as err:
        console.print(f"idsync: invalid setting {err}", style="red", markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(Supervisor(settings, echo=lambda m: print(m, flush=True)).run())


# ---------------------------------------------------------------------------- single components
@app.command()
def worker(
    lane: Annotated[str, typer.Option(help="revocation or sync")] = "sync",
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Run Celery workers for one lane. Revocation gets its own processes so no sync backlog can delay it."""
    from shared.dispatch import LANES

    if lane not in LANES:
        raise typer.BadParameter(f"lane must be one of {', '.join(LANES)}")
    settings = _settings()
    components.redis_url(settings)
    celery = components.celery_app(settings)
    celery.worker_main(
        ["worker", "-Q", lane, "-n", f"{lane}@%h", "-c", str(concurrency), "--loglevel", settings.log_level, "-E"]
    )


@app.command()
def webhook(
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
) -> None:
    """Run the Graph change-notification receiver (POST /graph/notifications, /graph/lifecycle)."""
    import uvicorn

    from shared.logging import configure_logging

    settings = _settings()
    configure_logging(settings)
    uvicorn.run(
        components.webhook_app(settings),
        host=host or settings.webhook_host,
        port=port or settings.webhook_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def poll(once: Annotated[bool, typer.Option(help="run one users+groups round and exit")] = False) -> None:
    """Run the Graph delta poller: the safety net for notifications Graph silently drops."""
    from shared.logging import configure_logging

    settings = _settings()
    configure_logging(settings)
    poller = components.delta_poller(settings)
    if once:
        for resource in ("users", "groups"):
            console.print(poller.run_round(resource))
        return
    poller.run_forever(_stop_on_signals())


@app.command()
def beat() -> None:
    """Run the scheduler: re-enqueue parked messages when due; create and renew Graph subscriptions."""
    import time

    from shared.logging import configure_logging, get_logger
    from workers import scheduler

    settings = _settings()
    configure_logging(settings)
    log = get_logger("idsync.beat")
    stop = _stop_on_signals()
    celery, redis = components.celery_app(settings), components.redis_client(settings)
    def heartbeat() -> None:
        while not stop.wait(0 if not redis.exists(BEAT_HEARTBEAT_KEY) else 10):
            try:
                redis.set(BEAT_HEARTBEAT_KEY, f"{time.time():.3f}", ex=120)
            except Exception as err:  # noqa: BLE001 - a missed beat is reported by `idsync health beat`
                log.warning("heartbeat_failed", error=type(err).__name__)

    threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()
    if settings.tenant_configured:
        manager = components.subscription_manager(settings)

        def subscriptions() -> None:
            # At start-up the webhook may not listen yet (Graph's handshake would fail): retry quickly until the
            # subscriptions exist, then settle into the manager's own renewal cadence.
            while not stop.is_set():
                try:
                    manager.ensure()
                    break
                except Exception as err:  # noqa: BLE001 - logged and retried; beat must keep parking going
                    log.warning("subscriptions_not_ready", error=type(err).__name__, detail=str(err)[:200])
                    stop.wait(2)
            manager.run_forever(stop)

        threading.Thread(target=subscriptions, name="subscriptions", daemon=True).start()
    else:
        log.warning("subscriptions_disabled", reason="no tenant configured")
    scheduler.run_forever(celery, redis, stop)


@app.command()
def flower(
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    address: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
) -> None:
    """Run Flower (queue and worker dashboard) behind basic auth."""
    import secrets

    settings = _settings()
    components.redis_url(settings)
    password = settings.flower_password.get_secret_value() if settings.flower_password else None
    if not password:
        password = secrets.token_urlsafe(12)
        pw_file = settings.var_dir / "flower.password"
        pw_file.parent.mkdir(parents=True, exist_ok=True)
        pw_file.write_text(password + "\n")
        pw_file.chmod(0o600)
        console.print(f"Flower: user {settings.flower_user}, password generated in {pw_file}", markup=False)
    celery = components.celery_app(settings)
    celery.start(
        [
            "flower",
            f"--address={address}",
            f"--port={port or settings.flower_port}",
            f"--basic-auth={settings.flower_user}:{password}",
        ]
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sandbox(ctx: typer.Context) -> None:
    """Run the local Entra ID + Graph + Salesforce sandbox (arguments as `python -m sandbox --help`)."""
    from sandbox.__main__ import main

    raise typer.Exit(main(list(ctx.args)))


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


# ---------------------------------------------------------------------------- dead-letter queue
def _dlq(settings: Settings) -> Any:
    from shared.dlq import DeadLetterQueue

    return DeadLetterQueue(components.redis_client(settings), settings.dlq_max_entries,
                           settings.dlq_max_age_days * 86400)


@dlq_app.command("list")
def dlq_list(
    lane: LaneOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 100,
) -> None:
    """List dead-lettered messages."""
    entries = _dlq(_settings()).list(lane=lane, limit=limit)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    table = Table(title=f"Dead letters ({len(entries)})")
    for col in ("id", "lane", "task", "error", "attempts", "last failure", "correlation"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.id, e.lane, e.task, f"{e.error_class}: {e.error_message[:80]}", str(e.attempts),
                      str(e.last_failed_at), str(e.correlation_id or ""))
    console.print(table)


@dlq_app.command("show")
def dlq_show(entry_id: str) -> None:
    """Show one entry in full, traceback included."""
    entry = _dlq(_settings()).get(entry_id)
    if entry is None:
        console.print(f"no dead letter {entry_id}", style="red", markup=False)
        raise typer.Exit(1)
    typer.echo(json.dumps(entry.model_dump(mode="json"), indent=2))


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
        console.print(f"replayed {ok}, failed {failed}", markup=False)
        raise typer.Exit(1 if failed else 0)
    if not replay(celery, dlq, entry_id):
        console.print(f"{entry_id}: not replayed (unknown, or another replay holds it)", style="red", markup=False)
        raise typer.Exit(1)
    console.print(f"{entry_id}: replayed", markup=False)


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


def main() -> None:  # pragma: no cover - console entry convenience
    app(prog_name="idsync")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
