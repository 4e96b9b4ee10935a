"""Who is in each group the mapping names: transitive member snapshots in Redis, refreshed from Graph on group events.

Why snapshots: a group notification says only "this group changed", and a user added to or removed from a group gets
no notification of their own. Re-reading the group's transitive members and comparing with the last snapshot tells
exactly which users' desired state may have changed (they are marked dirty); removed members are found only this
way. The same snapshots then answer "which mapped groups is this user in" for a batch of 200 users with one Redis
pipeline instead of 200 Graph calls, which is what makes a 5,000-user group change cheap.

Correctness: snapshots are hints too. A snapshot is replaced atomically (RENAME) after a full read, a group whose
snapshot was never read is "not ready" and planning waits for it, and destructive decisions (deprovisioning a user
who seems out of scope) are verified against Graph live by the revocation lane before anything is deactivated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from shared.redis_values import argument_slices

PREFIX = "idsync:gm"
READY_KEY = f"{PREFIX}:ready"  # hash: group id -> time of the last full read
# set once the first snapshots of the mapped groups exist (first sync batch or first reconcile): a group read for the
# first time after that is a newly mapped group whose members must be planned; before it, a first start
BASELINE_KEY = f"{PREFIX}:baseline"


class MemberSource(Protocol):
    def transitive_member_ids(self, group_id: str) -> set[str]: ...


class GroupMembership:
    """Snapshots of transitive user members per group (client with `decode_responses=True`)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    @staticmethod
    def _key(group_id: str) -> str:
        return f"{PREFIX}:{group_id}"

    def refresh(self, graph: MemberSource, group_id: str) -> set[str]:
        """Read the group's members from Graph, replace the snapshot, and return the users who joined or left.

        On the first read every member counts as changed (they were never planned against this group).
        """
        members = graph.transitive_member_ids(group_id)
        return self.replace(group_id, members)

    def replace(self, group_id: str, members: set[str]) -> set[str]:
        key = self._key(group_id)
        previous = {str(m) for m in self.redis.smembers(key)}
        staged = f"{key}:staged:{time.time_ns()}"
        pipe = self.redis.pipeline(transaction=True)
        for chunk in argument_slices(sorted(members)):
            pipe.sadd(staged, *chunk)
        if members:
            pipe.rename(staged, key)
        else:
            pipe.delete(key)
        pipe.hset(READY_KEY, group_id, repr(time.time()))
        pipe.execute()
        return members ^ previous

    def forget(self, group_id: str) -> None:
        """The group is no longer mapped (or was deleted): drop its snapshot."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._key(group_id))
        pipe.hdel(READY_KEY, group_id)
        pipe.execute()

    def baseline_established(self) -> bool:
        return bool(self.redis.exists(BASELINE_KEY))

    def establish_baseline(self) -> None:
        self.redis.set(BASELINE_KEY, repr(time.time()), nx=True)

    def not_ready(self, group_ids: Iterable[str]) -> set[str]:
        """The groups among `group_ids` that have never been read (planning must wait for them)."""
        ids = list(group_ids)
        if not ids:
            return set()
        stamps = self.redis.hmget(READY_KEY, ids)
        return {g for g, stamp in zip(ids, stamps, strict=True) if stamp is None}

    def memberships(self, user_ids: list[str], group_ids: list[str]) -> dict[str, set[str]]:
        """user id -> the groups among `group_ids` the user is (transitively) in, from the snapshots."""
        out: dict[str, set[str]] = {u: set() for u in user_ids}
        if not user_ids or not group_ids:
            return out
        pipe = self.redis.pipeline(transaction=False)
        for group_id in group_ids:
            pipe.smismember(self._key(group_id), user_ids)
        for group_id, flags in zip(group_ids, pipe.execute(), strict=True):
            for user_id, flag in zip(user_ids, flags, strict=True):
                if flag:
                    out[user_id].add(group_id)
        return out

    def members(self, group_id: str) -> set[str]:
        return {str(m) for m in self.redis.smembers(self._key(group_id))}
