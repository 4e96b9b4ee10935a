"""The audit trail: every record goes to a capped Redis stream and to the log, and reads back newest first."""

from __future__ import annotations

import fakeredis
import structlog

from shared.audit import MAX_LEN, STREAM_KEY, audit, recent


def test_audit_records_are_streamed_logged_and_read_back_newest_first() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    with structlog.testing.capture_logs() as logs:
        audit(r, "freeze", "u1", "005A", "done", "c1")
        audit(r, "deactivate", "u1", "005A", "blocked", "c1", code="FIELD_INTEGRITY_EXCEPTION")
        audit(r, "revoke", "u2", None, "no_salesforce_user", None)

    newest, middle, _ = recent(r, 10)
    assert (newest["action"], newest["entra_id"], newest["sf_user_id"], newest["correlation_id"]) == (
        "revoke",
        "u2",
        None,
        None,
    )
    assert middle["detail"] == {"code": "FIELD_INTEGRITY_EXCEPTION"} and middle["outcome"] == "blocked"
    assert [entry["action"] for entry in logs] == ["freeze", "deactivate", "revoke"]
    assert logs[1]["code"] == "FIELD_INTEGRITY_EXCEPTION" and logs[1]["correlation_id"] == "c1"
    assert len(recent(r, 1)) == 1 and r.xlen(STREAM_KEY) == 3 and MAX_LEN == 100_000
