"""Worker fixtures: small settings, fakes injected through `workers.context`, an app and an in-process worker.

The worker runs in a thread with the solo pool against the real `redis_server`, so messages really go through
kombu's Redis transport (acks, retries, routing) while Graph and Salesforce are in-memory fakes.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from shared.dispatch import LANES
from shared.settings import Settings, load_settings
from workers import context
from workers.app import create_app

_spec = importlib.util.spec_from_file_location("idsync_worker_fakes", Path(__file__).with_name("fakes.py"))
assert _spec and _spec.loader
fakes = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fakes
_spec.loader.exec_module(fakes)


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "max_retries": 2,
        "max_deliveries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "park_threshold_s": 5.0,
        "task_time_limit_s": 30,
        "visibility_timeout_s": 120,
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


@pytest.fixture
def settings(redis_server: Any) -> Settings:
    return make_settings(redis_server.url)


@pytest.fixture
def graph() -> Any:
    return fakes.FakeGraph()


@pytest.fixture
def salesforce() -> Any:
    return fakes.FakeSalesforce()


@pytest.fixture
def ctx(settings: Settings, redis_client: Any, graph: Any, salesforce: Any) -> Iterator[context.WorkerContext]:
    context.reset()
    yield context.override(settings=settings, redis=redis_client, graph=graph, salesforce=salesforce)
    context.reset()


@pytest.fixture
def app(settings: Settings) -> Celery:
    return create_app(settings, polling_interval_s=0.1)


@pytest.fixture
def worker(app: Celery, ctx: context.WorkerContext) -> Iterator[Any]:
    with start_worker(app, queues=list(LANES), pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; fail the test (not hang) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


@pytest.fixture
def waiter() -> Callable[..., Any]:
    return wait_for


class Finished:
    """Every task execution the in-process worker finished: (task name, task id, state, return value)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, str, Any]] = []

    def __call__(self, sender: Any = None, task_id: str = "", retval: Any = None, state: str = "", **_: Any) -> None:
        self.runs.append((getattr(sender, "name", ""), task_id, state, retval))

    def of(self, name: str) -> list[tuple[str, str, str, Any]]:
        return [run for run in self.runs if run[0] == name]

    def outcomes(self, name: str) -> list[Any]:
        return [run[3] for run in self.of(name) if run[2] == "SUCCESS"]


@pytest.fixture
def finished() -> Iterator[Finished]:
    from celery.signals import task_postrun

    recorder = Finished()
    task_postrun.connect(recorder, weak=False)
    try:
        yield recorder
    finally:
        task_postrun.disconnect(recorder)
