"""The PostgreSQL sink against a real server: idsync creates and versions its schema, stores each entry once, and
`verify --sink postgres` names an edited or deleted row."""

from __future__ import annotations

from typing import Any

import psycopg

from shared.audit_chain import parse_lines, verify
from shared.audit_sinks.postgres import MIGRATIONS, PostgresSink, migrate, read_lines
from shared.audit_writer import AuditWriter
from tests.shared.audit_helpers import KEY, drain, emit


def _trail(redis_client: Any, url: str, n: int = 12) -> None:
    writer = AuditWriter(redis_client, {"postgres": PostgresSink(url)}, KEY, checkpoint_every=5)
    assert writer.acquire()
    emit(redis_client, n)
    drain(writer)
    writer.sinks["postgres"].close()


def test_the_schema_is_created_versioned_and_indexed_for_user_and_time_queries(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert migrate(conn) == MIGRATIONS[-1][0]
        assert migrate(conn) == MIGRATIONS[-1][0]  # idempotent
        versions = [r[0] for r in conn.execute("SELECT version FROM idsync_schema_version ORDER BY version")]
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'idsync_audit'")}
    assert versions == [v for v, _ in MIGRATIONS]
    assert {"idsync_audit_entra_time", "idsync_audit_upn_time", "idsync_audit_time"} <= indexes


def test_entries_are_stored_once_with_queryable_columns(redis_client: Any, postgres_url: str) -> None:
    _trail(redis_client, postgres_url)
    sink = PostgresSink(postgres_url)
    lines = list(read_lines(postgres_url))
    sink.deliver([__import__("json").loads(line) for line in lines[:4]])  # a repeated batch after a crash
    sink.close()
    with psycopg.connect(postgres_url) as conn:
        count = conn.execute("SELECT count(*) FROM idsync_audit").fetchone()
        row = conn.execute("SELECT upn, action, outcome, latency_ms FROM idsync_audit WHERE entra_id = 'entra-3'"
                           ).fetchone()
    assert count is not None and count[0] == 12 + 1  # 12 events, 1 checkpoint after the (single) batch
    assert row is not None and row[:3] == ("u3@example.com", "revoke", "revoked") and row[3] >= 50
    assert verify(parse_lines(read_lines(postgres_url)), [KEY]).intact


def test_verify_names_an_edited_and_a_deleted_row(redis_client: Any, postgres_url: str) -> None:
    _trail(redis_client, postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE idsync_audit SET entry = replace(entry, '\"outcome\":\"revoked\"', "
                     "'\"outcome\":\"in_sync\"') WHERE seq = 4")
        conn.execute("DELETE FROM idsync_audit WHERE seq = 9")
    verdict = verify(parse_lines(read_lines(postgres_url)), [KEY])
    assert [(p.seq, p.kind) for p in verdict.problems] == [(4, "edited"), (9, "deleted")]
