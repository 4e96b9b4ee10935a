"""The Celery configuration: durable acks, one visibility timeout everywhere, lanes routed by task-name prefix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.settings import SettingsError, load_settings
from workers.app import create_app

TASKS = {
    "revocation.check_user",
    "revocation.revoke_user",
    "revocation.deprovision_user",
    "revocation.retry_deactivation",
    "revocation.release_held",
    "sync.user_changed",
    "sync.drain_users",
    "sync.reactivate_user",
    "sync.transfer_ownership",
    "sync.group_changed",
    "sync.contact_changed",
    "sync.contact_refresh",
    "sync.provision_request",
    "sync.reconcile",
}


def _app(**overrides: object):
    return create_app(load_settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", **overrides))


def test_messages_are_acked_late_requeued_on_worker_loss_and_prefetched_one_at_a_time() -> None:
    conf = _app().conf
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True and conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.worker_hijack_root_logger is False and conf.worker_soft_shutdown_timeout > 0
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True
    assert conf.broker_connection_retry_on_startup is True


def test_one_visibility_timeout_is_set_in_all_three_places_and_exceeds_the_time_limits() -> None:
    conf = _app(visibility_timeout_s=900, task_time_limit_s=120).conf
    assert conf.broker_transport_options["visibility_timeout"] == 900
    assert conf.result_backend_transport_options["visibility_timeout"] == 900
    assert conf.visibility_timeout == 900
    assert conf.task_soft_time_limit < conf.task_time_limit == 120 < 900
    assert conf.broker_transport_options["polling_interval"] <= 1


def test_tasks_are_routed_to_their_lane_by_name_prefix() -> None:
    app = _app()
    app.loader.import_default_modules()
    assert TASKS <= set(app.tasks)
    router = app.amqp.router
    for name in TASKS:
        assert router.route({}, name)["queue"].name == name.split(".")[0]
    assert {q.name for q in app.conf.task_queues} == {"revocation", "sync"}


def test_the_dispatch_table_names_exactly_the_tasks_the_workers_register() -> None:
    from shared.dispatch import LANES, TASK_NAMES

    app = _app()
    app.loader.import_default_modules()
    registered = {name for name in app.tasks if name.split(".", 1)[0] in LANES}
    assert registered == TASK_NAMES == TASKS


def test_a_missing_redis_url_is_named_in_one_line() -> None:
    with pytest.raises(SettingsError, match="IDSYNC_REDIS_URL"):
        create_app(load_settings(_env_file=None))


def test_the_module_app_can_be_imported_without_any_settings() -> None:
    code = "import workers.app as m; print(type(m.app).__name__)"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Celery"


def test_the_module_app_takes_its_configuration_from_idsync_settings_when_celery_first_needs_it() -> None:
    code = "import workers.app as m; c = m.app.conf; print(c.broker_url, c.task_acks_late, c.visibility_timeout)"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "IDSYNC_REDIS_URL": "redis://127.0.0.1:6399/3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["redis://127.0.0.1:6399/3", "True", "3600"]
