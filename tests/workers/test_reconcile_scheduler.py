"""Beat's part of reconciliation: a run every `reconcile_interval_s` (the first one interval after beat first
starts), none while one runs, and a run cut short is resumed as soon as its lock is free."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from shared.reconcile.run_state import LOCK_KEY, RedisRunLog
from workers.reconcile import CHECK_EVERY_S, ReconcileScheduler


class Sent:
    def __init__(self) -> None:
        self.tasks: list[str] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        self.tasks.append(name)


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def _scheduler(redis: Any, interval: float = 3600.0) -> tuple[ReconcileScheduler, Sent]:
    sent = Sent()
    return ReconcileScheduler(sent, redis, SimpleNamespace(reconcile_interval_s=interval, graph_tenant_id="t")), sent


def test_the_first_run_comes_one_interval_after_beat_first_starts(redis) -> None:
    scheduler, sent = _scheduler(redis)
    assert scheduler.tick(now=1000.0, mono=100.0) is None
    assert scheduler.tick(now=1000.0 + 3599, mono=100.0 + CHECK_EVERY_S) is None
    assert scheduler.tick(now=1000.0 + 3600, mono=100.0 + 2 * CHECK_EVERY_S) == "scheduled"
    assert sent.tasks == ["sync.reconcile"]


def test_nothing_is_scheduled_while_a_run_holds_the_lock(redis) -> None:
    scheduler, sent = _scheduler(redis)
    scheduler.tick(now=0.0, mono=0.0)
    redis.set(LOCK_KEY, "somewhere:1:x", ex=60)
    assert scheduler.tick(now=5000.0, mono=CHECK_EVERY_S) is None
    assert sent.tasks == []


def test_a_run_cut_short_is_resumed_once_its_lock_is_gone_and_only_once(redis) -> None:
    scheduler, sent = _scheduler(redis)
    scheduler.tick(now=0.0, mono=0.0)
    RedisRunLog.start(redis)  # a run whose worker died: its lock expired
    assert scheduler.tick(now=10.0, mono=CHECK_EVERY_S) == "resumed"
    assert scheduler.tick(now=20.0, mono=2 * CHECK_EVERY_S) is None  # the published task may still be queued
    assert sent.tasks == ["sync.reconcile"]


def test_an_interval_of_zero_never_schedules(redis) -> None:
    scheduler, sent = _scheduler(redis, interval=0)
    for n in range(5):
        assert scheduler.tick(now=n * 10_000.0, mono=n * CHECK_EVERY_S) is None
    assert sent.tasks == []
