"""The PostgreSQL sink (psycopg 3): one row per chain entry, schema created and migrated by idsync.

Why the exact entry text is kept (`entry`, canonical JSON) next to the typed columns: the columns serve queries (per
user, per time range, per correlation id; all indexed), the text is what `idsync audit verify --sink postgres`
re-hashes. A row whose columns disagree with its entry is caught there too.

Idempotent by sequence number (`ON CONFLICT (seq) DO NOTHING`), so a batch delivered twice after a crash is stored
once. Migrations are numbered, applied in order under an advisory lock (two writers starting together cannot both
migrate) and recorded in `idsync_schema_version`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from shared.audit_events import canonical_json

CONNECT_TIMEOUT_S = 5
#: Any constant shared by every idsync process: the key of the advisory lock that serialises migrations.
MIGRATION_LOCK = 0x1D5_A0D17

#: (version, statements). Append new versions; never edit an applied one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE idsync_audit (
            seq            bigint PRIMARY KEY,
            entry_type     text NOT NULL,
            prev_hash      char(64) NOT NULL,
            hash           char(64) NOT NULL,
            chained_at     timestamptz NOT NULL,
            occurred_at    timestamptz,
            action         text,
            outcome        text,
            actor          text,
            entra_id       text,
            sf_user_id     text,
            upn            text,
            correlation_id text,
            latency_ms     double precision,
            entry          text NOT NULL
        )""",
        "CREATE INDEX idsync_audit_entra_time ON idsync_audit (entra_id, occurred_at)",
        "CREATE INDEX idsync_audit_upn_time ON idsync_audit (lower(upn), occurred_at)",
        "CREATE INDEX idsync_audit_time ON idsync_audit (occurred_at)",
        "CREATE INDEX idsync_audit_correlation ON idsync_audit (correlation_id)",
    ]),
]

_INSERT = """INSERT INTO idsync_audit (seq, entry_type, prev_hash, hash, chained_at, occurred_at, action, outcome,
    actor, entra_id, sf_user_id, upn, correlation_id, latency_ms, entry)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (seq) DO NOTHING"""


def _ts(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema to the newest version; returns it. Safe to run from several processes at once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS idsync_schema_version (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM idsync_schema_version").fetchone()
        current = int(row[0]) if row else 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO idsync_schema_version (version) VALUES (%s)", (version,))
            current = version
    return current


def _row(entry: dict[str, Any]) -> tuple[Any, ...]:
    event = entry.get("event") or {}
    return (
        entry["seq"], entry["type"], entry["prev_hash"], entry["hash"], _ts(entry["chained_at"]),
        _ts(event.get("time") if event else (entry.get("checkpoint") or {}).get("signed_at")),
        event.get("action"), event.get("outcome"), event.get("actor"), event.get("entra_id"),
        event.get("sf_user_id"), event.get("upn"), event.get("correlation_id"), event.get("latency_ms"),
        canonical_json(entry),
    )


class PostgresSink:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                                   application_name="idsync-audit-writer")
            migrate(conn)
            self._conn = conn
        return self._conn

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_INSERT, [_row(e) for e in entries])

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def read_lines(url: str) -> Iterator[str]:
    """The stored entries in sequence order, as the JSONL sink would hold them, for verify/export/report.

    A row whose typed columns were edited without its entry text shows as edited too: the seq column is checked
    against the entry, and the other columns are only a query aid.
    """
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
        migrate(conn)
        # A server-side cursor (inside a transaction): a large trail streams instead of landing in memory at once.
        with conn.transaction(), conn.cursor(name="idsync_audit_read") as cur:
            cur.execute("SELECT seq, hash, entry FROM idsync_audit ORDER BY seq")
            for seq, digest, text in cur:
                if f'"seq":{seq},' not in text or f'"hash":"{digest}"' not in text:
                    yield '{"not": "an entry whose columns match its text"}'
                    continue
                yield text
