"""Done-when #1 (audit): through the real pipeline, every configured sink receives the same hash-chained trail;
`idsync audit verify` finds it intact in the files and in PostgreSQL; export and report match the trail; and a
PostgreSQL outage during 1,000 events delays only that sink: nothing is lost and nothing else waits."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from shared.audit import audit
from shared.audit_chain import Problem, parse_lines, verify
from shared.audit_sinks.jsonl import read_lines
from shared.audit_sinks.postgres import read_lines as pg_lines
from shared.audit_writer import backlog, head

pytestmark = pytest.mark.integration

KEY = "integration-audit-key"
HEC_TOKEN = "hec-integration-token"
ALL_SINKS = ["jsonl", "postgres", "salesforce", "syslog", "splunk_hec"]


def _subscribe(stack: Any) -> None:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings()
    SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()


def _start_writer(stack: Any, **env: str) -> None:
    stack.env.update({"IDSYNC_AUDIT_HMAC_KEY": KEY, "IDSYNC_AUDIT_CHECKPOINT_INTERVAL_S": "0.5",
                      "IDSYNC_AUDIT_SINK_BACKOFF_MAX_S": "1", **env})
    stack.start("audit-writer", "audit-writer", ready=lambda: b"audit_writer_leading" in stack.log("audit-writer"))


def _idsync(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=stack.tmp, env={**os.environ, **stack.env},
                          capture_output=True, text=True, timeout=120)


def _delivered_everywhere(stack: Any, sinks: list[str]) -> bool:
    """Every event is chained, the chain ends in a checkpoint, and every sink has all of it."""
    state = backlog(stack.redis, sinks)
    return (state["inbox_pending"] == 0 and state["head_seq"] > 0 and state["checkpoint_seq"] == state["head_seq"]
            and all(s["backlog"] == 0 for s in state["sinks"].values()))


def _chain(items: list[Any]) -> list[tuple[int, str]]:
    return [(e["seq"], e["hash"]) for e in items if not isinstance(e, Problem)]


def test_every_sink_receives_the_same_chain_and_export_and_report_match_it(stack, wait_for, postgres_url, tmp_path):
    from tests.integration.audit_receivers import HecReceiver, SyslogTlsReceiver

    syslog = SyslogTlsReceiver(stack.sandbox.tls.ca)
    hec = HecReceiver(stack.sandbox.tls.ca, HEC_TOKEN)
    try:
        stack.start_worker("revocation")
        stack.start_webhook()
        _subscribe(stack)
        _start_writer(stack, IDSYNC_AUDIT_SINKS=",".join(ALL_SINKS), IDSYNC_AUDIT_POSTGRES_URL=postgres_url,
                      IDSYNC_AUDIT_SYSLOG_URL=f"tls://127.0.0.1:{syslog.port}",
                      IDSYNC_AUDIT_SPLUNK_HEC_URL=f"https://127.0.0.1:{hec.port}",
                      IDSYNC_AUDIT_SPLUNK_HEC_TOKEN=HEC_TOKEN, IDSYNC_AUDIT_BATCH_SIZE="7")

        user, sf_user = stack.active_member_in_salesforce()
        upn = user["userPrincipalName"]
        stack.tenant.disable(user["id"])
        revoke = wait_for(lambda: stack.audit("revoke", user["id"]), timeout=30, what="the revoke audit record")[0]
        for i in range(15):  # more actions, so the trail spans several batches and checkpoints
            audit(stack.redis, "sync_user", f"entra-{i}", None, "in_sync", f"corr-{i}")
        wait_for(lambda: _delivered_everywhere(stack, ALL_SINKS), timeout=60, what="every sink up to date")
        wait_for(lambda: len(syslog.entries) >= head(stack.redis)["seq"], timeout=10, what="syslog frames")

        trail = parse_lines(read_lines(stack.tmp / "var" / "audit"))
        expected = _chain(trail)
        assert len(expected) == head(stack.redis)["seq"] and expected[0][0] == 1
        salesforce_rows = stack.org.sf.query_all("SELECT Detail__c, Sequence__c, Action__c, Upn__c FROM "
                                                 "Identity_Audit__c WHERE Audit_Key__c != null")["records"]
        from_salesforce = sorted((json.loads(r["Detail__c"]) for r in salesforce_rows), key=lambda e: e["seq"])
        copies = {
            "postgres": parse_lines(pg_lines(postgres_url)),
            "salesforce": from_salesforce,
            "syslog": syslog.entries,
            "splunk_hec": hec.entries,
        }
        for name, copy in copies.items():
            assert _chain(copy) == expected, f"{name} holds a different trail"
            assert verify(copy, [KEY.encode()]).intact, name
        assert any(r["Action__c"] == "Revoke" and r["Upn__c"] == upn for r in salesforce_rows)
        assert {m["app"] for m in syslog.messages} == {"idsync"} and {m["pri"] for m in syslog.messages} <= {109, 110}

        checked = _idsync(stack, "audit", "verify")
        assert checked.returncode == 0 and "the chain is intact" in checked.stdout, checked.stdout + checked.stderr
        checked = _idsync(stack, "audit", "verify", "--sink", "postgres")
        assert checked.returncode == 0 and "intact" in checked.stdout, checked.stdout + checked.stderr

        exported = _idsync(stack, "audit", "export", "--format", "csv", "--since", "1h")
        rows = list(csv.DictReader(io.StringIO(exported.stdout)))
        events = [e for e in trail if not isinstance(e, Problem) and e["type"] == "event"]
        assert [(int(r["seq"]), r["hash"]) for r in rows] == [(e["seq"], e["hash"]) for e in events]
        as_jsonl = _idsync(stack, "audit", "export", "--format", "jsonl")
        assert as_jsonl.stdout.splitlines() == [line.rstrip("\n") for line in read_lines(stack.tmp / "var" / "audit")]

        report = tmp_path / "report.csv"
        made = _idsync(stack, "audit", "report", "--user", upn, "--output", str(report))
        assert made.returncode == 0, made.stderr
        (row,) = list(csv.DictReader(report.open()))
        this_change = [e for e in events if e["event"]["correlation_id"] == revoke["correlation_id"]
                       and e["event"]["action"] in ("freeze", "deactivate", "revoke")]
        assert (row["upn"], row["change"], row["outcome"], row["sf_user_id"]) == (upn, "revoked", "revoked",
                                                                                    sf_user["Id"])
        assert row["evidence_seqs"].split() == [str(e["seq"]) for e in this_change]
        assert float(row["latency_ms"]) == pytest.approx(this_change[-1]["event"]["latency_ms"], abs=0.1)
        page = tmp_path / "report.html"
        assert _idsync(stack, "audit", "report", "--output", str(page)).returncode == 0
        html = page.read_text()
        assert upn in html and "revoked" in html and f"#{this_change[-1]['seq']}:" in html
    finally:
        syslog.stop()
        hec.stop()


def test_a_postgres_outage_during_1000_events_loses_nothing_and_delays_nothing_else(
    stack, wait_for, throwaway_postgres
):
    sinks = ["jsonl", "postgres"]
    stack.start_worker("revocation")
    stack.start_webhook()
    _subscribe(stack)
    _start_writer(stack, IDSYNC_AUDIT_SINKS=",".join(sinks), IDSYNC_AUDIT_POSTGRES_URL=throwaway_postgres.url)

    def emit(start: int, n: int, workers: int = 4) -> None:
        """As worker processes do: several writers appending at once."""
        errors: list[BaseException] = []

        def run(offset: int) -> None:
            try:
                for i in range(start + offset, start + n, workers):
                    audit(stack.redis, "revoke", f"entra-{i}", None, "revoked", f"corr-{i}")
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

    def events_in_postgres() -> int:
        with psycopg.connect(throwaway_postgres.url, connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*) FROM idsync_audit WHERE entry_type = 'event' "
                               "AND entra_id LIKE 'entra-%'").fetchone()
        return int(row[0]) if row else 0

    emit(0, 200)
    wait_for(lambda: backlog(stack.redis, sinks)["sinks"]["postgres"]["backlog"] == 0 and events_in_postgres() == 200,
             timeout=30, what="the first 200 events in PostgreSQL")

    throwaway_postgres.stop()
    user, _ = stack.active_member_in_salesforce()
    stack.tenant.disable(user["id"])  # a leaver during the outage is revoked as usual
    emit(200, 800)  # every append returned while PostgreSQL was down: workers are not blocked
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, timeout=30,
             what="the leaver deactivated while PostgreSQL is down")
    jsonl_dir = stack.tmp / "var" / "audit"

    def jsonl_events() -> int:
        return sum(1 for e in parse_lines(read_lines(jsonl_dir)) if not isinstance(e, Problem) and e["type"] == "event"
                   and e["event"]["entra_id"].startswith("entra-"))

    wait_for(lambda: jsonl_events() == 1000, timeout=60, what="the JSONL sink to get all 1,000 meanwhile")
    state = backlog(stack.redis, sinks)
    assert state["sinks"]["postgres"]["backlog"] >= 800 and state["sinks"]["jsonl"]["backlog"] == 0
    assert b"audit_sink_failed" in stack.log("audit-writer")

    throwaway_postgres.start()
    wait_for(lambda: backlog(stack.redis, sinks)["sinks"]["postgres"]["backlog"] == 0, timeout=60,
             what="PostgreSQL to catch up")
    assert events_in_postgres() == 1000
    in_db = parse_lines(pg_lines(throwaway_postgres.url))
    assert verify(in_db, [KEY.encode()]).intact
    ids = [e["event"]["entra_id"] for e in in_db if not isinstance(e, Problem) and e["type"] == "event"]
    emitted = [i for i in ids if i.startswith("entra-")]
    assert sorted(emitted) == sorted(f"entra-{i}" for i in range(1000)) and len(set(emitted)) == 1000
    assert user["id"] in ids  # the leaver's revocation, audited during the outage, reached PostgreSQL too
    assert _chain(in_db) == _chain(parse_lines(read_lines(jsonl_dir)))[: len(_chain(in_db))]
