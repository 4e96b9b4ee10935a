from __future__ import annotations

import json

import fakeredis

from producers.known_subscriptions import KnownSubscriptions
from producers.subscriptions import recorded_subscription_ids, subscriptions_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingRedis:
    """Counts the reads the webhook would make per item."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self.reads = 0

    def hvals(self, key):
        self.reads += 1
        return self.redis.hvals(key)


def _record(redis, resource: str, sub_id: str) -> None:
    redis.hset(subscriptions_key("t"), resource, json.dumps({"id": sub_id, "resource": resource, "expiry": "x"}))


def test_recorded_ids_are_read_from_the_managers_hash_and_junk_is_skipped():
    redis = fakeredis.FakeRedis()
    _record(redis, "/users", "s-users")
    _record(redis, "/groups", "s-groups")
    redis.hset(subscriptions_key("t"), "/junk", "not json")
    assert recorded_subscription_ids(redis, "t") == {"s-users", "s-groups"}
    assert recorded_subscription_ids(redis, "other") == set()


def test_a_flood_of_items_costs_one_redis_read_per_cache_period():
    redis, clock = CountingRedis(fakeredis.FakeRedis(decode_responses=True)), Clock()
    _record(redis.redis, "/users", "s1")
    known = KnownSubscriptions(redis, "t", ttl_s=5, miss_reload_s=1, clock=clock)
    assert all("s1" in known for _ in range(1000))
    assert not any(f"forged-{i}" in known for i in range(1000))
    assert redis.reads == 1
    clock.now += 5.1
    assert "s1" in known
    assert redis.reads == 2


def test_a_subscription_created_a_moment_ago_is_accepted_after_at_most_the_miss_reload_delay():
    redis, clock = CountingRedis(fakeredis.FakeRedis(decode_responses=True)), Clock()
    _record(redis.redis, "/users", "old")
    known = KnownSubscriptions(redis, "t", ttl_s=5, miss_reload_s=1, clock=clock)
    assert "old" in known
    _record(redis.redis, "/users", "recreated")  # the manager replaced the subscription
    assert "recreated" not in known  # within the miss-reload delay: still the cached view
    clock.now += 1.1
    assert "recreated" in known
    assert "old" not in known


def test_a_subscription_this_process_just_created_is_accepted_at_once_after_invalidate():
    redis, clock = CountingRedis(fakeredis.FakeRedis(decode_responses=True)), Clock()
    _record(redis.redis, "/users", "old")
    known = KnownSubscriptions(redis, "t", ttl_s=5, miss_reload_s=1, clock=clock)
    assert "old" in known
    _record(redis.redis, "/users", "replacement")  # the webhook answered subscriptionRemoved by creating it
    known.invalidate()
    assert "replacement" in known  # no clock movement needed
