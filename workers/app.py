"""The Celery application: the only place where Celery is configured.

Run the two lanes on separate worker processes, so a sync backlog can never delay a leaver
(docs/decisions.md#separate-lanes):

    celery -A workers.app worker -Q revocation -c 4 -n revocation@%h
    celery -A workers.app worker -Q sync -c 8 -n sync@%h
    idsync beat   (or: python -m workers.scheduler)   # moves parked messages back to their queues when due

Settings come from `IDSYNC_*` (shared/settings.py). Why these Celery settings (docs/decisions.md, sections
"Visibility timeout" and "Late acks and poison messages"):
- acks_late + reject_on_worker_lost + prefetch 1: a message is acknowledged only after its task finished, a killed
  pool child puts it back, and a worker holds at most one unacknowledged message per process. The resulting
  redelivery loop for poison messages is broken by the delivery counter in `workers.base`.
- one visibility timeout, set in all three places the docs require, larger than the hard time limit and every
  countdown (settings validate that; longer waits are parked, never held as Celery ETAs).
- JSON only, no result backend (results are not used; a dead result backend has dropped tasks, celery #8588).
- task events on, so Flower and exporters see sent/started/succeeded/failed.
- structlog owns logging (`worker_hijack_root_logger=False`); `shared.logging.configure_logging` runs per process.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from shared.dispatch import LANE_REVOCATION, LANE_SYNC
from shared.settings import Settings, SettingsError, get_settings

#: How long an idle consumer blocks in BRPOP before checking for shutdown: short, so a warm shutdown is quick.
POLLING_INTERVAL_S = 0.5
#: A warm-shutdown phase in which running tasks may finish and unacked messages are restored (Celery 5.5+).
SOFT_SHUTDOWN_TIMEOUT_S = 10.0
#: The soft time limit fires this long before the hard one, so a task can log and give up cleanly.
SOFT_LIMIT_MARGIN_S = 10

TASK_MODULES = ["workers.revocation", "workers.sync", "workers.ownership_transfer", "workers.deactivation_retry",
                "workers.guests", "workers.requests", "workers.reconcile"]


def celery_config(settings: Settings, polling_interval_s: float = POLLING_INTERVAL_S) -> dict[str, Any]:
    """The full Celery configuration derived from idsync settings."""
    if not settings.redis_url:
        raise SettingsError("IDSYNC_REDIS_URL: not set (the broker; `idsync run` starts an embedded Redis)")
    vt = settings.visibility_timeout_s
    hard = settings.task_time_limit_s
    soft = hard - SOFT_LIMIT_MARGIN_S if hard > 2 * SOFT_LIMIT_MARGIN_S else hard * 0.8
    # A reconciliation reads the whole tenant: its own limit, kept below the visibility timeout (a message still
    # running past it would be delivered again); a run cut short by it resumes at its next chunk.
    rec_hard = max(1, min(settings.reconcile_time_limit_s, int(vt * 0.9)))
    rec_soft = rec_hard - SOFT_LIMIT_MARGIN_S if rec_hard > 2 * SOFT_LIMIT_MARGIN_S else rec_hard * 0.8
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": vt, "polling_interval": polling_interval_s},
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "task_queues": [
            Queue(LANE_REVOCATION, Exchange(LANE_REVOCATION), routing_key=LANE_REVOCATION),
            Queue(LANE_SYNC, Exchange(LANE_SYNC), routing_key=LANE_SYNC),
        ],
        "task_routes": {
            f"{LANE_REVOCATION}.*": {"queue": LANE_REVOCATION},
            f"{LANE_SYNC}.*": {"queue": LANE_SYNC},
        },
        "task_default_queue": LANE_SYNC,
        "task_create_missing_queues": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": hard,
        "task_soft_time_limit": soft,
        "task_annotations": {"sync.reconcile": {"time_limit": rec_hard, "soft_time_limit": rec_soft}},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_soft_shutdown_timeout": SOFT_SHUTDOWN_TIMEOUT_S,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_disable_rate_limits": True,  # the shared Redis limiter does this fleet-wide
        "enable_utc": True,
    }


def configure(app: Celery, settings: Settings, polling_interval_s: float = POLLING_INTERVAL_S) -> Celery:
    app.conf.update(celery_config(settings, polling_interval_s))
    return app


def create_app(settings: Settings, polling_interval_s: float = POLLING_INTERVAL_S) -> Celery:
    """A configured app for `settings`; tests build their own with test settings."""
    app = Celery("idsync", include=TASK_MODULES, set_as_current=False)
    return configure(app, settings, polling_interval_s)


def _lazy_app() -> Celery:
    """The module-level app reads settings only when Celery first needs its configuration, so importing this
    module (tests, tools) does not require a Redis URL."""
    lazy = Celery("idsync", include=TASK_MODULES)

    def _configure_from_settings(sender: Celery, **_: Any) -> None:
        sender.conf.update(celery_config(get_settings()))

    # weak=False: a weakly referenced local function would be collected before Celery configures the app.
    lazy.on_configure.connect(_configure_from_settings, weak=False)
    return lazy


app = _lazy_app()


@signals.worker_process_init.connect
def _init_process_logging(**_: Any) -> None:
    """Each pool child configures logging itself (structlog state is per process)."""
    from shared.logging import configure_logging

    configure_logging(get_settings())


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Connected so Celery does not install its own handlers; ours render stdlib records the same way."""
    from shared.logging import configure_logging

    configure_logging(get_settings())
