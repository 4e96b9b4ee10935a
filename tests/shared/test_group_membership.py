"""Group member snapshots: a refresh reports exactly who joined or left; lookups answer per user in one pipeline."""

from __future__ import annotations

import redis

from shared.grants import Grants
from shared.group_membership import GroupMembership


class Members:
    def __init__(self, by_group: dict[str, set[str]]) -> None:
        self.by_group = by_group
        self.reads: list[str] = []

    def transitive_member_ids(self, group_id: str) -> set[str]:
        self.reads.append(group_id)
        return set(self.by_group[group_id])


def test_the_first_read_reports_every_member_and_later_reads_only_joiners_and_leavers(
    redis_client: redis.Redis,
) -> None:
    graph = Members({"g1": {"a", "b", "c"}})
    snapshots = GroupMembership(redis_client)
    assert snapshots.refresh(graph, "g1") == {"a", "b", "c"}
    graph.by_group["g1"] = {"b", "c", "d"}
    assert snapshots.refresh(graph, "g1") == {"a", "d"}
    assert snapshots.members("g1") == {"b", "c", "d"}


def test_a_group_never_read_is_not_ready_and_an_emptied_group_is(redis_client: redis.Redis) -> None:
    snapshots = GroupMembership(redis_client)
    assert snapshots.not_ready(["g1", "g2"]) == {"g1", "g2"}
    snapshots.refresh(Members({"g1": {"a"}}), "g1")
    snapshots.refresh(Members({"g2": set()}), "g2")
    assert snapshots.not_ready(["g1", "g2"]) == set()
    assert snapshots.refresh(Members({"g1": set()}), "g1") == {"a"}
    assert snapshots.members("g1") == set()


def test_memberships_answers_for_a_batch_of_users_across_groups(redis_client: redis.Redis) -> None:
    snapshots = GroupMembership(redis_client)
    graph = Members({"all": {"a", "b", "c"}, "sales": {"b"}, "support": {"c"}})
    for g in graph.by_group:
        snapshots.refresh(graph, g)
    got = snapshots.memberships(["a", "b", "c", "z"], ["all", "sales", "support"])
    assert got == {"a": {"all"}, "b": {"all", "sales"}, "c": {"all", "support"}, "z": set()}


def test_forgetting_a_group_drops_its_snapshot(redis_client: redis.Redis) -> None:
    snapshots = GroupMembership(redis_client)
    snapshots.refresh(Members({"g1": {"a"}}), "g1")
    snapshots.forget("g1")
    assert snapshots.members("g1") == set() and snapshots.not_ready(["g1"]) == {"g1"}


def test_the_grant_ledger_records_additions_and_removals_per_user(redis_client: redis.Redis) -> None:
    grants = Grants(redis_client)
    grants.record("u1", added=["ps:Sales_Cloud_User", "group:All_Sales"])
    grants.record("u1", removed=["group:All_Sales"])
    grants.record("u2", added=["role"])
    assert grants.of(["u1", "u2", "u3"]) == {
        "u1": frozenset({"ps:Sales_Cloud_User"}), "u2": frozenset({"role"}), "u3": frozenset()}
