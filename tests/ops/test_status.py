"""`idsync status` per lane: where every message is (waiting, running, retrying, parked, dead-lettered, dropped by the
DLQ cap), and recent revocations with the UPN, read from Redis alone."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest

from ops.status import collect, unacked_by_lane
from shared import audit, parking
from shared.dlq import DeadLetter, DeadLetterQueue
from shared.identity_links import IdentityLinks
from shared.settings import load_settings


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def settings():
    return load_settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", dlq_max_entries=1)


def _unacked(r, tag: str, lane: str, eta: str | None) -> None:
    """What kombu's Redis transport stores for a message a worker holds: `[message, exchange, routing_key]`."""
    message = {"body": "e30=", "headers": {"task": f"{lane}.x", "id": tag, "eta": eta, "retries": 1},
               "properties": {"delivery_tag": tag, "delivery_info": {"exchange": lane, "routing_key": lane}}}
    r.hset("unacked", tag, json.dumps([message, lane, lane]))


def test_running_and_countdown_retries_are_counted_per_lane_from_kombus_unacked_hash(r) -> None:
    _unacked(r, "a", "revocation", eta="2030-01-01T00:00:00+00:00")
    _unacked(r, "b", "revocation", eta=None)
    _unacked(r, "c", "sync", eta="2030-01-01T00:00:00+00:00")
    _unacked(r, "d", "sync", eta="2030-01-01T00:00:00+00:00")
    r.hset("unacked", "junk", "not json")
    assert unacked_by_lane(r) == {"revocation": {"running": 1, "retrying": 1}, "sync": {"running": 0, "retrying": 2}}


def test_status_shows_waiting_retrying_parked_dead_lettered_and_dropped_per_lane(r, settings) -> None:
    r.lpush("revocation", json.dumps({"headers": {"published_at": f"{time.time() - 5:.3f}"}}))
    _unacked(r, "a", "revocation", eta="2030-01-01T00:00:00+00:00")
    parking.park(r, "revocation.revoke_user", [], {}, {}, "revocation", time.time() + 600)
    parking.park(r, "sync.user_changed", [], {}, {}, "sync", time.time() + 600)
    parking.park(r, "sync.user_changed", [], {}, {}, "sync", time.time() + 900)
    dlq = DeadLetterQueue(r, max_entries=1, max_age_s=86400)
    for entry_id in ("s1", "s2", "s3"):
        dlq.put(DeadLetter(id=entry_id, task="sync.user_changed", lane="sync", error_class="PermanentError"))

    lanes = collect(settings, r)["lanes"]
    assert {k: lanes["revocation"][k] for k in ("depth", "running", "retrying", "parked", "dlq", "dlq_dropped")} == {
        "depth": 1, "running": 0, "retrying": 1, "parked": 1, "dlq": 0, "dlq_dropped": 0}
    assert lanes["revocation"]["oldest_age_s"] >= 5
    assert {k: lanes["sync"][k] for k in ("depth", "running", "retrying", "parked", "dlq", "dlq_dropped")} == {
        "depth": 0, "running": 0, "retrying": 0, "parked": 2, "dlq": 1, "dlq_dropped": 2}
    assert lanes["sync"]["dlq_last_dropped_at"] >= time.time() - 60


def test_recent_revocations_show_the_upn_also_for_records_written_before_it_was_audited(r, settings) -> None:
    links = IdentityLinks(r)
    links.set_link("u-old", "005OLD", "old@contoso.com")
    audit.audit(r, "revoke", "u-old", "005OLD", "revoked", "c1")  # an older record: no UPN in its detail
    audit.audit(r, "revoke", "u-new", "005NEW", "revoked", "c2", upn="new@contoso.com")
    audit.audit(r, "revoke", "u-none", None, "no_salesforce_user", "c3")

    revocations = collect(settings, r)["recent_revocations"]
    assert [(rev["entra_id"], rev["upn"]) for rev in revocations] == [
        ("u-none", None), ("u-new", "new@contoso.com"), ("u-old", "old@contoso.com")]


def test_status_shows_the_latest_reconciliations_a_run_cut_short_and_held_deactivations(r, settings, capsys) -> None:
    from ops.cli.inspect import _print_reconcile
    from shared.reconcile.run_state import RedisRunLog

    done = RedisRunLog.start(r)
    done.record_many([("u1", "update", {}), ("u2", "deprovision", {})])
    done.set(guard={"held": True, "deprovisions": 60, "linked_total": 100})
    done.finish()
    cut = RedisRunLog.start(r)  # its worker died: no lock
    cut.record("u3", "create", {})

    rec = collect(settings, r)["reconcile"]
    assert rec["current"] == cut.run_id and rec["running"] is False
    assert [run["run_id"] for run in rec["recent"]] == [cut.run_id, done.run_id]
    assert rec["recent"][1]["counts"]["update"] == 1
    _print_reconcile(rec)
    out = capsys.readouterr().out
    assert f"reconcile {cut.run_id}: CUT SHORT" in out
    assert f"60 DEACTIVATIONS HELD: `idsync approve {done.run_id}`" in out
