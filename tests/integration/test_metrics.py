"""Done-when #2 (metrics): after leavers go through the real pipeline, each process's /metrics shows the expected
counts: the revocation worker (a prefork pool of two, so multiprocess mode is exercised), beat (pipeline state read
from Redis at scrape time) and the audit writer."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.embedded_redis import free_port

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_worker_beat_and_writer_metrics_count_what_happened(stack, wait_for):
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    ports = {name: free_port() for name in ("WORKER_REVOCATION", "BEAT", "AUDIT_WRITER")}
    stack.env.update({f"IDSYNC_METRICS_PORT_{name}": str(port) for name, port in ports.items()})
    stack.env["IDSYNC_AUDIT_HMAC_KEY"] = "metrics-test-key"
    stack.start_worker("revocation", concurrency=2)
    stack.start_webhook()
    settings = stack.settings()
    SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()
    stack.start("beat", "beat", ready=lambda: b"metrics_serving" in stack.log("beat"))
    stack.start("audit-writer", "audit-writer", ready=lambda: b"audit_writer_leading" in stack.log("audit-writer"))

    leavers = [stack.active_member_in_salesforce(skip=i)[0] for i in range(3)]
    for user in leavers:
        stack.tenant.disable(user["id"])
    for user in leavers:
        wait_for(lambda u=user: any(r["outcome"] == "revoked" for r in stack.audit("revoke", u["id"])), timeout=30,
                 what="revoked")

    worker = wait_for(lambda: (s := scrape(ports["WORKER_REVOCATION"])) and value(
        s, "idsync_revocation_latency_seconds_count", outcome="revoked") == 3 and s, timeout=10,
        what="three revocations in the worker's metrics")
    assert value(worker, "idsync_events_processed_total", lane="revocation", kind="user.changed",
                 outcome="revoked") == 3
    assert (value(worker, "idsync_task_duration_seconds_count", task="revocation.check_user",
                  lane="revocation") or 0) >= 3
    assert value(worker, "idsync_revocation_latency_seconds_bucket", outcome="revoked", le="+Inf") == 3
    assert value(worker, "idsync_tasks_dead_lettered_total", task="revocation.check_user", lane="revocation") in (
        None, 0.0)

    beat = wait_for(lambda: (s := scrape(ports["BEAT"])) and value(
        s, "idsync_audit_sink_backlog_entries", sink="jsonl") == 0 and value(s, "idsync_audit_head_seq") and s,
        timeout=20, what="the audit trail delivered, as beat sees it")
    assert value(beat, "idsync_state_up") == 1
    assert value(beat, "idsync_queue_depth", lane="revocation") == 0
    assert value(beat, "idsync_dlq_entries", lane="revocation") == 0
    assert value(beat, "idsync_graph_subscription_expiry_timestamp_seconds", resource="/users") is not None
    head_seq = value(beat, "idsync_audit_head_seq")
    assert head_seq is not None

    writer = scrape(ports["AUDIT_WRITER"])
    delivered = value(writer, "idsync_audit_entries_delivered_total", sink="jsonl")
    assert delivered is not None and delivered >= head_seq - 1
