from __future__ import annotations

import redis

from producers.checkpoints import DeltaCheckpoints


def test_a_saved_link_is_read_back_per_resource_and_tenant(redis_client):
    a, b = DeltaCheckpoints(redis_client, "tenant-a"), DeltaCheckpoints(redis_client, "tenant-b")
    a.save("users", "https://graph/users/delta?$deltatoken=1")
    assert a.get("users") == "https://graph/users/delta?$deltatoken=1"
    assert a.get("groups") is None
    assert b.get("users") is None
    a.clear("users")
    assert a.get("users") is None


def test_last_round_is_none_until_a_round_is_recorded_then_counts_resyncs(redis_client):
    cp = DeltaCheckpoints(redis_client, "t")
    assert cp.last_round("users") is None
    cp.record_round("users", events=3, pages=2, items=4, resynced=True)
    cp.record_round("users", events=0, pages=1, items=0, resynced=False)
    summary = cp.last_round("users")
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
    assert cp.last_round("groups")["events"] == 1
