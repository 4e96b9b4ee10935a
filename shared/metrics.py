"""Every Prometheus metric idsync exposes, defined in this one module.

Why one module: dashboards and alert rules (ops/grafana, ops/prometheus) name these series, and a test checks that
every name they use is defined here; a metric defined ad hoc in some other file would silently break a panel.

Three kinds:
- process counters and histograms (task outcomes, durations, retries, revocation latency, Graph 429s, limiter
  waits, audit delivery), incremented where the thing happens. In Celery's prefork pool every child writes them to
  files under PROMETHEUS_MULTIPROC_DIR and the worker's main process serves the sum (`shared.metrics_server`).
- state read from Redis at scrape time (`StateCollector`: queue depth and oldest message age per lane, DLQ, parked,
  reviews, Salesforce API usage, delta rounds, subscription expiry, audit backlog): counting these in-process would be
  wrong after any restart, while Redis always knows. `idsync beat` serves them.
- the webhook's own counters (`WebhookMetrics`), on a registry per app so several apps coexist in tests.

Metric names end in a unit (`_seconds`, `_entries`, `_ratio`); counters get `_total` from prometheus-client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Seconds; a revocation is meant to finish well under 1 s, so the buckets are dense there.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# ------------------------------------------------------------------------------------------- process metrics
EVENTS = Counter("idsync_events_processed", "Identity events processed by a task, by event kind and outcome",
                 ["lane", "kind", "outcome"])
TASK_DURATION = Histogram("idsync_task_duration_seconds", "Task execution time (one observation per execution)",
                          ["task", "lane"], buckets=DURATION_BUCKETS)
TASK_RETRIES = Counter("idsync_task_retries", "Executions that ended in a retry with backoff", ["task", "lane"])
TASKS_PARKED = Counter("idsync_tasks_parked", "Executions that parked their message (long backoff or deferral)",
                       ["task", "lane"])
TASKS_DEAD_LETTERED = Counter("idsync_tasks_dead_lettered", "Executions whose message went to the dead-letter queue",
                              ["task", "lane"])
REVOCATION_LATENCY = Histogram("idsync_revocation_latency_seconds",
                               "Entra change observed (webhook receipt / delta round) -> revocation done in Salesforce",
                               ["outcome"], buckets=LATENCY_BUCKETS)
GRAPH_THROTTLED = Counter("idsync_graph_throttled_responses", "Graph answers 429/503 that told us to wait", ["lane"])
LIMITER_WAIT = Histogram("idsync_limiter_wait_seconds", "Time slept in the fleet rate limiter before a call",
                         ["service", "lane"], buckets=DURATION_BUCKETS)
LIMITER_DEFERRED = Counter("idsync_limiter_deferred", "Calls the limiter sent back to the queue (wait too long)",
                           ["service", "lane"])
MAPPING_RELOAD_FAILURES = Counter("idsync_mapping_reload_failures", "Attribute-mapping reloads that were refused")
AUDIT_CHAINED = Counter("idsync_audit_entries_chained", "Entries appended to the hash chain", ["type"])
AUDIT_DELIVERED = Counter("idsync_audit_entries_delivered", "Chain entries delivered to a sink", ["sink"])
AUDIT_SINK_FAILURES = Counter("idsync_audit_sink_failures", "Failed delivery attempts to a sink (retried)", ["sink"])
GUARD_HELD = Counter("idsync_guard_held_deactivations",
                     "Deactivations the mass-deprovisioning guard held (user frozen, waiting for idsync approve)",
                     ["mode"])

#: Task outcomes that are failures handled by the base task, not results of the task body.
_RETRY, _PARKED, _DEAD = "retry", "parked", frozenset({"dead_lettered", "poison_message"})


def task_finished(task: str, lane: str, kind: str | None, outcome: str, duration_s: float | None) -> None:
    """The one hook `workers.base.IdentityTask._finish` calls for every execution."""
    EVENTS.labels(lane, kind or "none", outcome).inc()
    if duration_s is not None:
        TASK_DURATION.labels(task, lane).observe(duration_s)
    if outcome == _RETRY:
        TASK_RETRIES.labels(task, lane).inc()
    elif outcome == _PARKED:
        TASKS_PARKED.labels(task, lane).inc()
    elif outcome in _DEAD:
        TASKS_DEAD_LETTERED.labels(task, lane).inc()


def observe_revocation(outcome: str, latency_s: float) -> None:
    REVOCATION_LATENCY.labels(outcome).observe(latency_s)


# ------------------------------------------------------------------------------ state read from Redis at scrape
STATE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "idsync_state_up": ("1 when the last scrape could read Redis", ()),
    "idsync_queue_depth": ("Messages waiting on a lane", ("lane",)),
    "idsync_queue_oldest_message_age_seconds": ("Age of the oldest waiting message (0 when empty)", ("lane",)),
    "idsync_dlq_entries": ("Dead-lettered messages", ("lane",)),
    "idsync_in_flight_messages": ("Messages delivered to a worker and not yet acknowledged", ()),
    "idsync_parked_messages": ("Messages parked for a later retry", ()),
    "idsync_review_items": ("Users frozen but not deactivated, waiting for a human", ()),
    "idsync_pending_ownership_transfers": ("Record transfers waiting after revocations", ()),
    "idsync_guard_held_runs": ("Runs whose deactivations the mass-deprovisioning guard holds for a decision", ()),
    "idsync_guard_held_users": ("Users frozen but not deactivated until `idsync approve` / `idsync reject`", ()),
    "idsync_salesforce_api_usage_ratio": ("Share of the Salesforce daily API allowance used", ()),
    "idsync_sync_paused": ("1 while the sync lane is paused to keep API allowance for revocations", ()),
    "idsync_throttled_seconds": ("Seconds every worker still waits on a service's Retry-After", ("service",)),
    "idsync_delta_last_round_timestamp_seconds": ("When the delta poller last finished a round", ("resource",)),
    "idsync_graph_subscription_expiry_timestamp_seconds": ("When a Graph subscription expires", ("resource",)),
    "idsync_audit_head_seq": ("Sequence number of the newest chained audit entry", ()),
    "idsync_audit_inbox_pending_entries": ("Audit events not chained yet (capped at 10001)", ()),
    "idsync_audit_inbox_oldest_age_seconds": ("Age of the oldest audit event not chained yet (0 when none)", ()),
    "idsync_audit_sink_backlog_entries": ("Chained entries a sink has not received yet", ("sink",)),
    "idsync_audit_sink_lag_seconds": ("Age of the oldest entry a sink has not received (0 when none)", ("sink",)),
}


class StateCollector(Collector):
    """Reads the pipeline's state from Redis at scrape time through `snapshot()` (ops.status.collect's dict).

    The snapshot function is injected so this module needs neither Redis nor the producers package.
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # nothing at registration time: no Redis read while the server starts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(name, doc, labels=list(labels))
                    for name, (doc, labels) in STATE_METRICS.items()}
        try:
            data = self._snapshot()
        except Exception:  # noqa: BLE001 - Redis away: say so in a series (alerts fire on it), never fail the scrape
            families["idsync_state_up"].add_metric([], 0)
            yield families["idsync_state_up"]
            return
        families["idsync_state_up"].add_metric([], 1)
        for lane, info in data.get("lanes", {}).items():
            families["idsync_queue_depth"].add_metric([lane], info.get("depth", 0))
            families["idsync_queue_oldest_message_age_seconds"].add_metric([lane], info.get("oldest_age_s") or 0.0)
            families["idsync_dlq_entries"].add_metric([lane], info.get("dlq", 0))
        for key, name in (("in_flight", "idsync_in_flight_messages"), ("parked", "idsync_parked_messages"),
                          ("reviews", "idsync_review_items"),
                          ("pending_ownership_transfers", "idsync_pending_ownership_transfers")):
            if key in data:
                families[name].add_metric([], data[key])
        guard = data.get("guard")
        if guard is not None:
            families["idsync_guard_held_runs"].add_metric([], len(guard.get("held_runs") or []))
            families["idsync_guard_held_users"].add_metric([], guard.get("held_users", 0))
        api = data.get("api") or {}
        usage = api.get("sf_api_usage") or {}
        if usage.get("share") is not None:
            families["idsync_salesforce_api_usage_ratio"].add_metric([], usage["share"])
        families["idsync_sync_paused"].add_metric([], 1 if api.get("sync_paused") else 0)
        for service, keys in (api.get("throttled_for_s") or {}).items():
            families["idsync_throttled_seconds"].add_metric([service], max(keys.values(), default=0.0))
        for resource, last in (data.get("delta") or {}).items():
            if last and last.get("time"):
                families["idsync_delta_last_round_timestamp_seconds"].add_metric([resource], float(last["time"]))
        now = time.time()
        for sub in data.get("subscriptions") or []:
            if sub.get("expires_in_s") is not None:
                families["idsync_graph_subscription_expiry_timestamp_seconds"].add_metric(
                    [str(sub.get("resource"))], now + float(sub["expires_in_s"]))
        audit = data.get("audit") or {}
        if audit:
            families["idsync_audit_head_seq"].add_metric([], audit.get("head_seq", 0))
            families["idsync_audit_inbox_pending_entries"].add_metric([], audit.get("inbox_pending", 0))
            families["idsync_audit_inbox_oldest_age_seconds"].add_metric([], audit.get("inbox_oldest_age_s") or 0.0)
            for sink, info in (audit.get("sinks") or {}).items():
                families["idsync_audit_sink_backlog_entries"].add_metric([sink], info.get("backlog", 0))
                families["idsync_audit_sink_lag_seconds"].add_metric([sink], info.get("lag_s") or 0.0)
        yield from families.values()


# ---------------------------------------------------------------------------------------------------- webhook
class WebhookMetrics:
    """Prometheus counters on a registry of their own, so several apps (tests, replicas in one process) coexist."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("idsync_webhook_notifications_received", "Notification items received", registry=r)
        self.enqueued = Counter("idsync_webhook_events_enqueued", "Events published to the broker", ["lane"],
                                registry=r)
        self.rejected = Counter("idsync_webhook_rejected", "Requests or items rejected", ["reason"], registry=r)
        self.client_state_mismatch = Counter("idsync_webhook_client_state_mismatch",
                                             "Items whose clientState did not match", registry=r)
        self.collapsed = Counter("idsync_webhook_events_collapsed",
                                 "Events absorbed by a revocation task already waiting for the same user", registry=r)
        self.handshakes = Counter("idsync_webhook_handshakes", "Validation handshakes answered", ["endpoint"],
                                  registry=r)
        self.unavailable = Counter("idsync_webhook_unavailable", "503 answers (broker unavailable or too slow)",
                                   registry=r)
        self.lifecycle = Counter("idsync_webhook_lifecycle_events", "Lifecycle notifications accepted", ["event"],
                                 registry=r)


#: Counters and histograms defined above, by base name (the webhook's are listed by `defined_series`).
PROCESS_METRICS = (EVENTS, TASK_DURATION, TASK_RETRIES, TASKS_PARKED, TASKS_DEAD_LETTERED, REVOCATION_LATENCY,
                   GRAPH_THROTTLED, LIMITER_WAIT, LIMITER_DEFERRED, MAPPING_RELOAD_FAILURES, AUDIT_CHAINED,
                   AUDIT_DELIVERED, AUDIT_SINK_FAILURES, GUARD_HELD)


def defined_series() -> set[str]:
    """Every series name idsync can expose (with the _total/_bucket/_sum/_count suffixes), for the rule checks."""
    names: set[str] = set(STATE_METRICS)
    webhook = WebhookMetrics(CollectorRegistry())
    collectors: list[Any] = [*PROCESS_METRICS, *vars(webhook).values()]
    for metric in collectors:
        if not isinstance(metric, Counter | Histogram):
            continue
        for family in metric.describe():
            for suffix in ("", "_total", "_created", "_bucket", "_sum", "_count"):
                names.add(family.name + suffix)
    return names
