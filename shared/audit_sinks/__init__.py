"""Audit sinks: where the single writer delivers chain entries. One module per sink, each with one job.

A sink receives batches of chain entries in sequence order (`deliver`) and raises on any failure; the writer then
retries that sink alone with backoff, from the same position. Delivery is at least once, so every sink either
ignores entries it already holds (JSONL, PostgreSQL, Salesforce: by sequence number) or documents that its receiver
may see a repeat after a crash (syslog, Splunk HEC: the `seq` field identifies it).
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.settings import Settings


class AuditSink(Protocol):
    name: str

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        """Store `entries` (ascending seq) or raise; must not return before they are durable at the sink."""

    def close(self) -> None: ...


def build_sink(name: str, settings: Settings) -> AuditSink:
    """The configured sink called `name` (IDSYNC_AUDIT_SINKS)."""
    if name == "jsonl":
        from shared.audit_sinks.jsonl import JsonlSink

        return JsonlSink(settings.audit_trail_dir, settings.audit_jsonl_max_bytes)
    if name == "postgres":
        from shared.audit_sinks.postgres import PostgresSink

        assert settings.audit_postgres_url is not None
        return PostgresSink(settings.audit_postgres_url.get_secret_value())
    if name == "salesforce":
        from shared.audit_sinks.salesforce import SalesforceSink

        return SalesforceSink.from_settings(settings)
    if name == "syslog":
        from shared.audit_sinks.syslog import SyslogSink

        return SyslogSink.from_settings(settings)
    if name == "splunk_hec":
        from shared.audit_sinks.splunk_hec import SplunkHecSink

        return SplunkHecSink.from_settings(settings)
    raise ValueError(f"unknown audit sink {name!r}")
