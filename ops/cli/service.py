"""Commands that run idsync: everything supervised (`run`), or one component at a time, as compose runs them."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from ops import components
from ops.cli.app import app, console, stop_on_signals
from ops.cli.app import settings as _settings
from shared.settings import Settings, SettingsError, load_settings

BEAT_HEARTBEAT_KEY = "idsync:heartbeat:beat"


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
    if not once:
        from shared.metrics_server import serve

        serve(settings.metrics_port_poller, settings.metrics_host)
    if once:
        for resource in ("users", "groups"):
            console.print(poller.run_round(resource))
        return
    poller.run_forever(stop_on_signals())


@app.command()
def beat() -> None:
    """Run the scheduler: re-enqueue parked messages when due; create and renew Graph subscriptions."""
    import time

    from shared.logging import configure_logging, get_logger
    from workers import scheduler

    settings = _settings()
    configure_logging(settings)
    log = get_logger("idsync.beat")
    stop = stop_on_signals()
    celery, redis = components.celery_app(settings), components.redis_client(settings)
    from ops.status import collect
    from shared.metrics_server import serve_state

    serve_state(settings.metrics_port_beat, settings.metrics_host, lambda: collect(settings, redis))
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


