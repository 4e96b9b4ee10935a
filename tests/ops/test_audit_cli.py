"""`idsync audit verify|export|report` as an operator runs them, on a trail written by the real writer, and the
operator's DLQ replay landing in the trail with the operator as actor."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shared.audit import audit, recent
from shared.audit_sinks.jsonl import JsonlSink, trail_files
from shared.audit_writer import AuditWriter
from shared.dlq import DeadLetter, DeadLetterQueue
from tests.shared.audit_helpers import drain

KEY = "cli-test-key"


def _run(redis_server: Any, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_LOG_JSON": "true",
            "IDSYNC_AUDIT_HMAC_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=cwd, capture_output=True, text=True,
                          env={**base, **env}, timeout=60)


@pytest.fixture
def trail(redis_client: Any, tmp_path: Path) -> Path:
    """var/audit with two leavers and one joiner, chained and signed by the real writer."""
    now = time.time()
    audit(redis_client, "freeze", "e-ann", "005000000000001", "done", "c-ann", upn="ann@example.com")
    audit(redis_client, "deactivate", "e-ann", "005000000000001", "done", "c-ann", upn="ann@example.com")
    audit(redis_client, "revoke", "e-ann", "005000000000001", "revoked", "c-ann", upn="ann@example.com",
          observed_at=now - 0.25, rule="leaver:entra_disabled")
    audit(redis_client, "revoke", "e-bob", "005000000000002", "frozen_blocked", "c-bob", upn="bob@example.com",
          observed_at=now - 0.5)
    audit(redis_client, "activate", "e-cy", "005000000000003", "done", "c-cy", upn="cy@example.com")
    audit(redis_client, "sync_user", "e-cy", "005000000000003", "reactivated", "c-cy", upn="cy@example.com")
    audit(redis_client, "sync_user", "e-dee", None, "in_sync", "c-dee", upn="dee@example.com")
    writer = AuditWriter(redis_client, {"jsonl": JsonlSink(tmp_path / "var" / "audit", 10**6)}, KEY.encode())
    assert writer.acquire()
    drain(writer)
    return tmp_path / "var" / "audit"


def test_verify_says_intact_then_names_the_tampered_entry(redis_server, trail, tmp_path):
    ok = _run(redis_server, tmp_path, "audit", "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("the chain is intact: 8 entries (seq 1..8)"), ok.stdout
    (path,) = trail_files(trail)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["event"]["outcome"] = "in_sync"
    lines[2] = json.dumps(entry)
    del lines[4]
    path.write_text("\n".join(lines) + "\n")
    broken = _run(redis_server, tmp_path, "audit", "verify")
    assert broken.returncode == 1
    assert broken.stdout.splitlines()[:2] == ["seq 3: edited (its content does not match its hash)",
                                              "seq 5: deleted (missing from the trail)"]


def test_verify_without_a_key_or_a_trail_says_so_in_one_line(redis_server, trail, tmp_path):
    no_key = subprocess.run([sys.executable, "-m", "ops", "audit", "verify"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": redis_server.url}, timeout=60)
    assert no_key.returncode == 2 and len(no_key.stderr.strip().splitlines()) == 1
    assert "IDSYNC_AUDIT_HMAC_KEY" in no_key.stderr and "Traceback" not in no_key.stderr
    empty = _run(redis_server, tmp_path, "audit", "verify", "--dir", str(tmp_path / "nowhere"))
    assert empty.returncode == 2 and "no audit trail" in empty.stderr


def test_export_filters_by_time_and_writes_csv_or_jsonl(redis_server, trail, tmp_path):
    everything = _run(redis_server, tmp_path, "audit", "export", "--format", "csv")
    rows = list(csv.DictReader(everything.stdout.splitlines()))
    assert [r["action"] for r in rows] == ["freeze", "deactivate", "revoke", "revoke", "activate", "sync_user",
                                           "sync_user"]
    assert rows[2]["upn"] == "ann@example.com" and float(rows[2]["latency_ms"]) >= 250
    future = _run(redis_server, tmp_path, "audit", "export", "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout == ""
    out = tmp_path / "slice.jsonl"
    sliced = _run(redis_server, tmp_path, "audit", "export", "--since", "1h", "--until", "2999-01-01T00:00Z",
                  "--output", str(out))
    assert sliced.returncode == 0 and len(out.read_text().splitlines()) == 8
    bad = _run(redis_server, tmp_path, "audit", "export", "--since", "last tuesday")
    assert bad.returncode != 0 and "neither a date" in bad.stderr


def test_report_lists_grants_and_revocations_per_user_with_latency_and_evidence(redis_server, trail, tmp_path):
    out = tmp_path / "report.csv"
    made = _run(redis_server, tmp_path, "audit", "report", "--output", str(out))
    assert made.returncode == 0 and "3 user(s), 3 access change(s)" in made.stdout, made.stdout + made.stderr
    rows = {r["upn"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"ann@example.com", "bob@example.com", "cy@example.com"}  # dee: nothing changed
    ann = rows["ann@example.com"]
    assert (ann["change"], ann["outcome"], ann["actions"]) == ("revoked", "revoked", "freeze > deactivate > revoke")
    assert ann["evidence_seqs"] == "1 2 3" and float(ann["latency_ms"]) >= 250
    assert ann["rule"] == "leaver:entra_disabled"
    assert rows["bob@example.com"]["outcome"] == "frozen_blocked"
    assert (rows["cy@example.com"]["change"], rows["cy@example.com"]["evidence_seqs"]) == ("granted", "5 6")
    one = tmp_path / "ann.csv"
    assert _run(redis_server, tmp_path, "audit", "report", "--user", "ANN@example.com", "--output",
                str(one)).returncode == 0
    assert [r["upn"] for r in csv.DictReader(one.open())] == ["ann@example.com"]


def test_the_html_report_is_one_self_contained_page(redis_server, trail, tmp_path):
    page = tmp_path / "report.html"
    assert _run(redis_server, tmp_path, "audit", "report", "--output", str(page)).returncode == 0
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "the chain is intact" in html
    assert "<title>idsync audit report</title>" in html and "<h1>idsync audit report</h1>" in html
    assert "access report" not in html  # `idsync access report` is another page
    assert "ann@example.com" in html and "revoked" in html and "granted" in html and "#3:" in html
    assert "<script" not in html and "src=" not in html and "http" not in html.replace("http-equiv", "")
    wrong = _run(redis_server, tmp_path, "audit", "report", "--output", str(tmp_path / "report.pdf"))
    assert wrong.returncode == 2 and wrong.stderr == (
        f"idsync: --output {tmp_path / 'report.pdf'}: the format comes from the extension: .html, .htm, .csv\n")


@pytest.mark.parametrize("command", [["report"], ["export"]])
def test_an_output_in_a_missing_directory_is_one_line_before_the_trail_is_read_and_nothing_is_created(
        redis_server, tmp_path, command):
    target = tmp_path / "missing" / "dir" / "audit.html"
    result = _run(redis_server, tmp_path, "audit", *command, "--output", str(target))  # no trail: checked first
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"idsync: --output {target}: the directory {target.parent} does not exist (create it "
                             "first)\n")
    assert not (tmp_path / "missing").exists()


def test_an_output_under_a_file_or_naming_a_directory_is_refused(redis_server, trail, tmp_path):
    (tmp_path / "plan.json").write_text("{}")
    under_a_file = _run(redis_server, tmp_path, "audit", "report", "--output", "plan.json/a.html")
    assert under_a_file.returncode == 2
    assert under_a_file.stderr == "idsync: --output plan.json/a.html: plan.json is a file, not a directory\n"
    (tmp_path / "out.csv").mkdir()
    a_directory = _run(redis_server, tmp_path, "audit", "report", "--output", "out.csv")
    assert a_directory.returncode == 2
    assert a_directory.stderr == "idsync: --output out.csv: is a directory; give a file name in it\n"


def test_a_dlq_replay_is_audited_with_the_operator_as_actor(redis_server, redis_client, tmp_path):
    now = time.time()
    DeadLetterQueue(redis_client, 100, 86400).put(DeadLetter(
        id="d1", task="revocation.revoke_user", args=[{"id": "ev1", "object_id": "e-ann", "correlation_id": "c1"}],
        kwargs={}, headers={}, lane="revocation", error_class="TransportError", error_message="down", traceback="",
        attempts=3, first_failed_at=now, last_failed_at=now, correlation_id="c1", event_id="ev1"))
    replayed = _run(redis_server, tmp_path, "dlq", "replay", "d1")
    assert replayed.returncode == 0, replayed.stderr
    (record,) = [r for r in recent(redis_client, 10) if r["action"] == "dlq_replay"]
    event = json.loads(redis_client.xrange("idsync:audit", record["id"], record["id"])[0][1]["event"])
    assert event["actor"].startswith("operator:") and event["entra_id"] == "e-ann"
    assert (event["outcome"], event["correlation_id"], event["source_event"]) == ("replayed", "c1", "ev1")


def test_after_a_key_rotation_old_checkpoints_verify_with_the_old_key_file(redis_server, trail, tmp_path):
    rotated = _run(redis_server, tmp_path, "audit", "verify", IDSYNC_AUDIT_HMAC_KEY="the-new-key")
    assert rotated.returncode == 1 and "checkpoint signature does not verify" in rotated.stdout
    old = tmp_path / "old.key"
    old.write_text(KEY + "\n")
    accepted = _run(redis_server, tmp_path, "audit", "verify", "--key-file", str(old),
                    IDSYNC_AUDIT_HMAC_KEY="the-new-key")
    assert accepted.returncode == 0 and "intact" in accepted.stdout
