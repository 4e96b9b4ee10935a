from __future__ import annotations

import redis

from producers.checkpoints import DeltaCheckpoints


def test_a_saved_link_is_read_back_per_resource_and_tenant(redis_client):
    a, b = DeltaCheckpoints(redis_client, "tenant-a"), DeltaCheckpoints(redis_client, "tenant-b")
    a.save("users", "https://graph/users/delta?$deltatoken=1")
    assert a.get("users") == "https://graph/users/delta?$deltatoken=1"
    assert a.get("groups") is None
    assert b.get("users") is None
    a.discard("users", "expired")
    assert a.get("users") is None


def test_a_discarded_link_leaves_a_resync_pending_until_a_new_link_is_saved(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    cp.save("users", "https://graph/users/delta?$deltatoken=1")
    assert cp.resync_pending("users") is None
    cp.discard("users", "graph_url_changed")
    assert cp.get("users") is None
    pending = cp.resync_pending("users")
    assert pending is not None and pending["reason"] == "graph_url_changed"
    assert cp.resync_pending("groups") is None
    cp.save("users", "https://graph/users/delta?$deltatoken=2")
    assert cp.resync_pending("users") is None


def test_round_outcomes_count_failures_in_a_row_and_keep_the_last_error(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    assert cp.outcome("users") == {"last_success": None, "last_progress": None, "consecutive_failures": 0,
                                   "last_error": None}
    cp.record_success("users", now=100.0)
    cp.record_failure("users", ConnectionError("refused " + "x" * 500), now=110.0)
    cp.record_failure("users", TimeoutError("slow"), now=120.0)
    outcome = cp.outcome("users")
    assert outcome["consecutive_failures"] == 2 and outcome["last_success"] == 100.0
    assert outcome["last_error"] == {"class": "TimeoutError", "message": "slow", "time": 120.0}
    cp.record_failure("users", ConnectionError("refused " + "x" * 500), now=130.0)
    assert len(cp.outcome("users")["last_error"]["message"]) == 200
    cp.record_success("users", now=140.0)
    outcome = cp.outcome("users")
    assert (outcome["consecutive_failures"], outcome["last_success"]) == (0, 140.0)
    assert outcome["last_error"]["class"] == "ConnectionError"  # still shown, older than the last success


def test_last_round_is_none_until_a_round_is_recorded_then_counts_resyncs(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    assert cp.last_round("users") is None
    cp.record_round("users", events=3, pages=2, items=4, resynced=True)
    cp.record_round("users", events=0, pages=1, items=0, resynced=False)
    summary = cp.last_round("users")
    assert summary is not None
    assert (summary["events"], summary["pages"], summary["resyncs"]) == (0, 1, 1)
    assert summary["time"] > 0


def test_round_marks_belong_to_their_starting_link_and_expire(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    cp.mark_published("users", "link-1", ["u1:user.changed:abc"])
    assert cp.published_in_round("users", "link-1") == {"u1:user.changed:abc"}
    assert cp.published_in_round("users", "link-2") == set()
    assert 0 < redis_client.ttl(cp._round_key("users", "link-1")) <= 24 * 3600
    cp.finish_round("users", "link-1")
    assert cp.published_in_round("users", "link-1") == set()


def test_works_with_a_client_that_returns_bytes(redis_server):
    raw = redis.Redis.from_url(redis_server.url)  # decode_responses=False
    cp = DeltaCheckpoints(raw, "t")
    cp.save("groups", "link")
    cp.mark_published("groups", None, ["g1:group.changed:1"])
    cp.record_round("groups", events=1, pages=1, items=1, resynced=False)
    assert cp.get("groups") == "link"
    assert cp.published_in_round("groups", None) == {"g1:group.changed:1"}
    last_round = cp.last_round("groups")
    assert last_round is not None and last_round["events"] == 1
    cp.discard("groups", "expired")
    cp.record_failure("groups", RuntimeError("boom"))
    pending = cp.resync_pending("groups")
    assert pending is not None and pending["reason"] == "expired"
    assert cp.outcome("groups")["last_error"]["class"] == "RuntimeError"
