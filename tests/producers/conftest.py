from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Queue

from shared.settings import Settings, load_settings
from tests.producers.fakes import CLIENT_STATE, GRAPH, TENANT


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        _env_file=None,
        graph_authority=f"https://login.test/{TENANT}",
        graph_url=GRAPH,
        graph_tenant_id=TENANT,
        graph_client_id="client",
        graph_client_secret="secret",
        webhook_public_url="https://hook.test",
        webhook_client_state=CLIENT_STATE,
        webhook_max_body_bytes=4096,
        delta_interval_s=0.05,
        subscription_renew_before_s=3600,
        subscription_lifetime_min=4230,
    )


@pytest.fixture
def celery_app(redis_server) -> Iterator[Celery]:
    """A real Celery app on the test's own Redis: no worker, messages just land in the `revocation`/`sync` lists."""
    app = Celery("idsync-test", broker=redis_server.url, set_as_current=False)
    app.conf.task_queues = [Queue("revocation"), Queue("sync")]
    app.conf.broker_connection_timeout = 1
    app.conf.broker_connection_retry = False
    try:
        yield app
    finally:
        app.close()
