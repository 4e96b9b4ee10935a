"""Commands that run idsync: everything supervised (`run`), or one component at a time, as compose runs them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ops import components
from ops.cli.app import Lane, app, console, stop_on_signals
from ops.cli.app import settings as _settings
from shared.settings import Settings, load_checked_settings

BEAT_HEARTBEAT_KEY = "idsync:heartbeat:beat"
#: Seconds between heartbeats; `idsync health beat` allows 30 s, so one missed beat is not yet "unhealthy".
BEAT_HEARTBEAT_INTERVAL_S = 10.0
#: After a failed write, try again this soon: Redis coming back should turn the healthcheck green within seconds.
BEAT_HEARTBEAT_RETRY_S = 2.0
#: Subscription failures this soon after beat starts are the webhook still starting (logged at info, not warning).
SUBSCRIPTION_STARTUP_GRACE_S = 30.0


def beat_heartbeat(
    redis: Any,
    stop: threading.Event,
    interval_s: float = BEAT_HEARTBEAT_INTERVAL_S,
    retry_s: float = BEAT_HEARTBEAT_RETRY_S,
) -> None:
    """Write the beat heartbeat until `stop` is set, surviving any Redis outage.

    Every Redis call is inside the try: a heartbeat thread that dies on the first outage leaves
    `idsync health beat` (the compose healthcheck) reporting unhealthy for ever while beat itself keeps working.
    """
    from shared.logging import get_logger

    log = get_logger("idsync.beat")
    failing = False
    while True:
        try:
            redis.set(BEAT_HEARTBEAT_KEY, f"{time.time():.3f}", ex=120)
            if failing:
                log.info("heartbeat_restored")
            failing = False
        except Exception as err:  # noqa: BLE001 - a missed beat is reported by `idsync health beat`
            if not failing:  # once per outage, not every retry
                log.warning("heartbeat_failed", error=type(err).__name__)
            failing = True
        if stop.wait(retry_s if failing else interval_s):
            return


# ---------------------------------------------------------------------------- whole service
@app.command()
def run() -> None:
    """Start everything in one supervised process tree (embedded Redis and the sandbox when not configured)."""
    from ops.supervisor import Supervisor

    # Only .env and the environment: var/run.env and var/sandbox.env describe a previous run, not this one.
    settings = load_checked_settings(_env_file=(".env",))
    raise typer.Exit(Supervisor(settings, echo=lambda m: print(m, flush=True)).run())


# ---------------------------------------------------------------------------- single components
@app.command()
def worker(
    lane: Annotated[Lane, typer.Option(help="revocation or sync")] = "sync",
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Run Celery workers for one lane. Revocation gets its own processes so no sync backlog can delay it."""
    settings = _settings()
    components.redis_url(settings)
    _worker_metrics(settings, lane)
    celery = components.celery_app(settings)
    celery.worker_main(
        ["worker", "-Q", lane, "-n", f"{lane}@%h", "-c", str(concurrency), "--loglevel", settings.log_level, "-E"]
    )


def _worker_metrics(settings: Settings, lane: str) -> None:
    """Multiprocess metrics for the prefork pool, served by this (main) process; before anything imports them."""
    from shared.metrics_server import prepare_multiprocess, serve_multiprocess

    port = settings.metrics_port_worker_revocation if lane == "revocation" else settings.metrics_port_worker_sync
    if port:
        path = prepare_multiprocess(settings.metrics_dir or settings.var_dir / "prometheus", f"worker-{lane}")
        serve_multiprocess(port, settings.metrics_host, path)


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
    app = components.webhook_app(settings)
    if settings.webhook_metrics_port:
        from producers.webhook import serve_metrics

        metrics_host = host or settings.webhook_host
        try:
            serve_metrics(app.state.metrics, metrics_host, settings.webhook_metrics_port)
        except OSError as err:
            typer.echo(f"idsync: cannot serve metrics on {metrics_host}:{settings.webhook_metrics_port}: "
                       f"{err.strerror or err} (set IDSYNC_WEBHOOK_METRICS_PORT; 0 turns metrics off)", err=True)
            raise typer.Exit(2) from None
    uvicorn.run(
        app,
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
    if not once:
        from shared.metrics_server import serve

        serve(settings.metrics_port_poller, settings.metrics_host)
    if once:
        from producers.poller_lease import PollerBusy

        try:
            results = poller.run_once()  # under the tenant's lease: never beside a running poller
        except PollerBusy as err:
            typer.echo(f"idsync: {err}", err=True)
            raise typer.Exit(1) from None
        for result in results:
            console.print(result)
        return
    poller.run_forever(stop_on_signals())


@app.command("request-poller")
def request_poller(once: Annotated[bool, typer.Option(help="run one round and exit")] = False) -> None:
    """Poll Salesforce for approved User_Provisioning_Request__c records (only when the mapping enables requests)."""
    from shared.logging import configure_logging

    settings = _settings()
    configure_logging(settings)
    if not components.requests_enabled(settings):
        typer.echo("idsync: the reverse flow is off — set requests: {enabled: true} in the mapping file "
                   "(docs/guests-and-requests.md)", err=True)
        raise typer.Exit(2)
    poller = components.request_poller(settings)
    spec = poller.spec()
    if spec is None:  # the file changed in between
        raise typer.Exit(2)
    if once:
        console.print(poller.run_round(spec))
        return
    poller.run_forever(stop_on_signals())


@app.command()
def beat() -> None:
    """Run the scheduler: re-enqueue parked messages when due; create and renew Graph subscriptions."""
    from shared.dlq import DeadLetterQueue
    from shared.logging import configure_logging, get_logger
    from workers import scheduler

    settings = _settings()
    configure_logging(settings)
    log = get_logger("idsync.beat")
    stop = stop_on_signals()
    celery, redis = components.celery_app(settings), components.redis_client(settings)
    threading.Thread(target=beat_heartbeat, args=(redis, stop), name="heartbeat", daemon=True).start()
    from ops.status import collect
    from shared.metrics_server import serve_state

    serve_state(settings.metrics_port_beat, settings.metrics_host, lambda: collect(settings, redis))
    if settings.tenant_configured:
        manager = components.subscription_manager(settings)

        def subscriptions() -> None:
            # At start-up the webhook may not listen yet (Graph's handshake would fail): retry quickly until the
            # subscriptions exist, then settle into the manager's own renewal cadence. The first half minute of
            # failures is the expected start-up race (info); after that it is a problem worth a warning.
            started = time.monotonic()
            while not stop.is_set():
                try:
                    manager.ensure()
                    break
                except Exception as err:  # noqa: BLE001 - logged and retried; beat must keep parking going
                    level = log.info if time.monotonic() - started < SUBSCRIPTION_STARTUP_GRACE_S else log.warning
                    level("subscriptions_not_ready", error=type(err).__name__, detail=str(err)[:200])
                    stop.wait(2)
            manager.run_forever(stop)

        threading.Thread(target=subscriptions, name="subscriptions", daemon=True).start()
    else:
        log.warning("subscriptions_disabled", reason="no tenant configured")
    dlq = DeadLetterQueue(redis, settings.dlq_max_entries, settings.dlq_max_age_days * 86400.0)
    from shared.provisioning.mapping_store import MappingStore, mapping_path
    from workers.backlog_keeper import BacklogKeeper

    mappings = MappingStore(mapping_path(settings), redis)
    from workers.reconcile import Keepers, ReconcileScheduler

    keeper = Keepers(BacklogKeeper(celery, redis, settings.graph_tenant_id or "default", mappings),
                     ReconcileScheduler(celery, redis, settings))
    scheduler.run_forever(celery, redis, stop, dlq=dlq, keeper=keeper)


@app.command()
def flower(
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    address: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
) -> None:
    """Run Flower (queue and worker dashboard) behind basic auth."""
    settings = _settings()
    components.redis_url(settings)
    password = settings.flower_password.get_secret_value() if settings.flower_password else None
    if not password:
        password = _generated_flower_password(settings.var_dir / "flower.password")
        console.print(f"Flower: user {settings.flower_user}, password in {settings.var_dir / 'flower.password'}",
                      markup=False)
    celery = components.celery_app(settings)
    celery.start(
        [
            "flower",
            f"--address={address}",
            f"--port={port or settings.flower_port}",
            f"--basic-auth={settings.flower_user}:{password}",
        ]
    )


def _generated_flower_password(pw_file: Path) -> str:
    """The password kept in `pw_file`, or a new one written there 0600 from the first byte.

    Kept across restarts (the supervisor restarts a Flower that died; an open browser tab keeps working), unless the
    file is readable by others: a password that may have leaked is replaced.
    """
    import secrets

    from ops.runenv import write_private_file

    try:
        if pw_file.stat().st_mode & 0o077 == 0:
            kept = pw_file.read_text().strip()
            if kept:
                return kept
    except OSError:
        pass
    password = secrets.token_urlsafe(12)
    write_private_file(pw_file, password + "\n")
    return password


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sandbox(ctx: typer.Context) -> None:
    """Run the local Entra ID + Graph + Salesforce sandbox (arguments as `.venv/bin/python -m sandbox --help`)."""
    from sandbox.__main__ import main

    raise typer.Exit(main(list(ctx.args)))


