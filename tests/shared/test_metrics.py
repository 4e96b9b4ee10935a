"""The one metrics module: the task hook counts outcomes in the right series, and the state collector turns a Redis
snapshot into gauges (and says so in `idsync_state_up` when Redis cannot be read, instead of failing the scrape)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_task_hook_counts_events_retries_parking_and_dead_letters() -> None:
    def count(metric: Any, **labels: str) -> float:
        return metric.labels(**labels)._value.get()

    before = (count(metrics.EVENTS, lane="sync", kind="user.changed", outcome="retry"),
              count(metrics.TASK_RETRIES, task="sync.user_changed", lane="sync"),
              count(metrics.TASKS_PARKED, task="sync.user_changed", lane="sync"),
              count(metrics.TASKS_DEAD_LETTERED, task="sync.user_changed", lane="sync"))
    metrics.task_finished("sync.user_changed", "sync", "user.changed", "retry", 0.2)
    metrics.task_finished("sync.user_changed", "sync", "user.changed", "parked", 0.1)
    metrics.task_finished("sync.user_changed", "sync", "user.changed", "poison_message", None)
    after = (count(metrics.EVENTS, lane="sync", kind="user.changed", outcome="retry"),
             count(metrics.TASK_RETRIES, task="sync.user_changed", lane="sync"),
             count(metrics.TASKS_PARKED, task="sync.user_changed", lane="sync"),
             count(metrics.TASKS_DEAD_LETTERED, task="sync.user_changed", lane="sync"))
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1]


def test_the_state_collector_maps_the_status_snapshot_to_gauges() -> None:
    snapshot = {
        "lanes": {"revocation": {"depth": 2, "oldest_age_s": 3.5, "dlq": 1}, "sync": {"depth": 0, "oldest_age_s": None,
                                                                                      "dlq": 0}},
        "in_flight": 1, "parked": 4, "reviews": 2, "pending_ownership_transfers": 0,
        "api": {"sf_api_usage": {"used": 95, "total": 100, "share": 0.95}, "sync_paused": True,
                "throttled_for_s": {"graph": {"tenant": 2.5}, "salesforce": {}}},
        "delta": {"users": {"time": 1_700_000_000.0}, "groups": None},
        "subscriptions": [{"resource": "/users", "expires_in_s": 3600}],
        "audit": {"head_seq": 10, "inbox_pending": 3, "inbox_oldest_age_s": 1.5,
                  "sinks": {"jsonl": {"backlog": 0, "lag_s": 0.0}, "postgres": {"backlog": 7, "lag_s": 42.0}}},
        "guard": {"held_runs": [{"run_id": "live-20250101-1", "count": 60}], "held_users": 60},
    }
    registry = CollectorRegistry()
    registry.register(metrics.StateCollector(lambda: snapshot))
    got = samples(registry)
    assert got[("idsync_state_up", ())] == 1
    assert got[("idsync_queue_depth", (("lane", "revocation"),))] == 2
    assert got[("idsync_queue_oldest_message_age_seconds", (("lane", "sync"),))] == 0
    assert got[("idsync_dlq_entries", (("lane", "revocation"),))] == 1
    assert got[("idsync_salesforce_api_usage_ratio", ())] == 0.95 and got[("idsync_sync_paused", ())] == 1
    assert got[("idsync_throttled_seconds", (("service", "graph"),))] == 2.5
    assert got[("idsync_delta_last_round_timestamp_seconds", (("resource", "users"),))] == 1_700_000_000.0
    assert got[("idsync_graph_subscription_expiry_timestamp_seconds", (("resource", "/users"),))] > 1_700_000_000
    assert got[("idsync_audit_sink_backlog_entries", (("sink", "postgres"),))] == 7
    assert got[("idsync_audit_sink_lag_seconds", (("sink", "postgres"),))] == 42.0
    assert got[("idsync_guard_held_runs", ())] == 1 and got[("idsync_guard_held_users", ())] == 60


def test_an_unreadable_redis_is_a_series_not_a_failed_scrape() -> None:
    def broken() -> dict[str, Any]:
        raise ConnectionError("redis is down")

    registry = CollectorRegistry()
    registry.register(metrics.StateCollector(broken))
    assert samples(registry) == {("idsync_state_up", ()): 0}


def test_defined_series_lists_every_exposed_name() -> None:
    names = metrics.defined_series()
    for name in ("idsync_events_processed_total", "idsync_revocation_latency_seconds_bucket",
                 "idsync_mapping_reload_failures_total", "idsync_queue_depth", "idsync_webhook_rejected_total"):
        assert name in names
