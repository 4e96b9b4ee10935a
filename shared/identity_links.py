"""What idsync remembers per identity: the Entra -> Salesforce link, revocation tombstones, review items and
pending ownership transfers.

Why each exists:
- link: a hard-deleted Entra user can no longer be read from Graph, so its last known UPN and Salesforce user id must
  be stored to find (and revoke) the Salesforce user at all.
- tombstone: events are hints and arrive out of order; a sync event observed before a revocation must not undo it
  (docs/decisions.md#events-are-hints). The tombstone holds the time the revocation was observed; only newer events
  may act. A reactivation clears it with a compare-and-delete (`clear_tombstone_if`): only the value it read and
  acted on, never a newer one a revocation wrote meanwhile.
- review: some work cannot finish without a person (Salesforce refuses to deactivate a default owner; a leaver's
  record no rule can place). The user stays frozen and a human must act; that is a review item, not a dead letter.
  One item per identity and topic ("deactivation", "ownership", ...), each with a stable short `id` (kept while the
  item is updated) for `idsync review show ID` and `idsync review resolve ID`.
- pending transfer: a leaver whose records are being (or wait to be) given new owners; cleared when done.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

PREFIX = "idsync"
REVIEWS_KEY = f"{PREFIX}:reviews"
LINKS_BY_SF_KEY = f"{PREFIX}:links:by_sf"
TRANSFERS_KEY = f"{PREFIX}:transfers:pending"

# Keep the larger of the stored and the new tombstone: a late, older revocation must not move it backwards.
_SET_MAX = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


# Delete the tombstone only if it still holds the value the caller read (tonumber: the stored text is a float's repr).
_DELETE_IF_EQUAL = """
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Drop the Salesforce id from a link only if it is still the stale one (a concurrent task may have relinked it).
_FORGET_SF_USER = """
if redis.call('HGET', KEYS[1], 'sf_user_id') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'sf_user_id')
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Link:
    entra_id: str
    sf_user_id: str | None
    upn: str | None
    updated_at: float


class IdentityLinks:
    """Per-identity state in Redis (client must use `decode_responses=True`)."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    # --- link --------------------------------------------------------------------------------------------------

    def set_link(self, entra_id: str, sf_user_id: str | None = None, upn: str | None = None) -> None:
        """Record what we know; a None field keeps the stored value (a hard-deleted user has no UPN any more)."""
        fields: dict[FieldT, EncodableT] = {"updated_at": repr(time.time())}
        if sf_user_id:
            fields["sf_user_id"] = sf_user_id
        if upn:
            fields["upn"] = upn
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(_link_key(entra_id), mapping=fields)
        if sf_user_id:
            # The reverse index: matching must never hand a Salesforce user linked to one Entra user to another.
            pipe.hset(LINKS_BY_SF_KEY, sf_user_id, entra_id)
        pipe.execute()

    def links_of(self, entra_ids: list[str]) -> dict[str, Link | None]:
        """`get_link` for a whole batch in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for entra_id in entra_ids:
            pipe.hgetall(_link_key(entra_id))
        out: dict[str, Link | None] = {}
        for entra_id, data in zip(entra_ids, pipe.execute(), strict=True):
            out[entra_id] = None if not data else Link(
                entra_id=entra_id,
                sf_user_id=data.get("sf_user_id") or None,
                upn=data.get("upn") or None,
                updated_at=float(data.get("updated_at", 0.0)),
            )
        return out

    def entra_ids_of(self, sf_user_ids: list[str]) -> dict[str, str]:
        """Salesforce user id -> the Entra user idsync linked it to, for the ids that are linked."""
        if not sf_user_ids:
            return {}
        values = self.redis.hmget(LINKS_BY_SF_KEY, sf_user_ids)
        return {sf: str(e) for sf, e in zip(sf_user_ids, values, strict=True) if e}

    def get_link(self, entra_id: str) -> Link | None:
        data = self.redis.hgetall(_link_key(entra_id))
        if not data:
            return None
        sf_user_id, upn = data.get("sf_user_id"), data.get("upn")
        return Link(
            entra_id=entra_id,
            sf_user_id=str(sf_user_id) if sf_user_id else None,
            upn=str(upn) if upn else None,
            updated_at=float(data.get("updated_at", 0.0)),
        )

    def remove_link(self, entra_id: str) -> None:
        self.redis.delete(_link_key(entra_id))

    def forget_salesforce_user(self, entra_id: str, sf_user_id: str) -> bool:
        """Drop a stale Salesforce id (Salesforce said 404) but keep the UPN: a hard-deleted user can only be looked
        up again by it. True if the link still named `sf_user_id`."""
        return bool(self.redis.eval(_FORGET_SF_USER, 1, _link_key(entra_id), sf_user_id, repr(time.time())))

    # --- tombstone ---------------------------------------------------------------------------------------------

    def set_tombstone(self, entra_id: str, ts: float) -> None:
        self.redis.eval(_SET_MAX, 1, _tombstone_key(entra_id), repr(float(ts)))

    def tombstone(self, entra_id: str) -> float | None:
        raw = self.redis.get(_tombstone_key(entra_id))
        return float(raw) if raw is not None else None

    def clear_tombstone(self, entra_id: str) -> None:
        self.redis.delete(_tombstone_key(entra_id))

    def clear_tombstone_if(self, entra_id: str, expected: float) -> bool:
        """Delete the tombstone only if it still holds `expected`; False means a revocation wrote a newer one."""
        return bool(self.redis.eval(_DELETE_IF_EQUAL, 1, _tombstone_key(entra_id), repr(float(expected))))

    # --- review items ------------------------------------------------------------------------------------------

    def add_review(
        self,
        entra_id: str,
        sf_user_id: str | None,
        reason: str,
        detail: str,
        *,
        upn: str | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        topic: str | None = None,
        fix: str | None = None,
        extra: dict[str, Any] | None = None,
        where: str | None = None,
        candidates: list[str] | None = None,
    ) -> dict[str, Any]:
        """One open item per identity and `topic` (e.g. "deactivation", "ownership", "match:match"); a repeat
        updates it (duplicate events must not multiply review work) and keeps its id and creation time. `fix` says
        what the admin does; `extra` holds what the item is about (e.g. the records no rule could place); `where`
        names the mapping line, `candidates` the Salesforce users a matching review is about. Returns the item."""
        now = time.time()
        key = review_key(entra_id, topic)
        raw = self.redis.hget(REVIEWS_KEY, key)
        previous: dict[str, Any] = json.loads(raw) if raw else {}
        item = {
            "id": _with_id(key, previous)["id"] if previous else _new_review_id(),
            "key": key,
            "entra_id": entra_id,
            "topic": topic,
            "upn": upn or previous.get("upn"),
            "sf_user_id": sf_user_id,
            "reason": reason,
            "code": code,
            "detail": detail,
            "fix": fix,
            "correlation_id": correlation_id,
            "created_at": previous.get("created_at", now),
            "updated_at": now,
            **(extra or {}),
        }
        if where:
            item["where"] = where
        if candidates:
            item["candidates"] = candidates
        self.redis.hset(REVIEWS_KEY, key, json.dumps(item))
        return item

    def list_reviews(self) -> list[dict[str, Any]]:
        items = [_with_id(str(key), json.loads(raw)) for key, raw in self.redis.hgetall(REVIEWS_KEY).items()]
        return sorted(items, key=lambda item: item["created_at"])

    def get_review(self, key: str) -> dict[str, Any] | None:
        """By review id, by stored key, or by Entra object id (what the audit trail and logs carry; the oldest of
        that identity's items)."""
        raw = self.redis.hget(REVIEWS_KEY, key)
        if raw:
            return _with_id(key, json.loads(raw))
        items = self.list_reviews()
        return next((item for item in items if item["id"] == key), None) or next(
            (item for item in items if item.get("entra_id") == key), None)

    def review(self, entra_id: str, topic: str | None) -> dict[str, Any] | None:
        """The open item of one identity on one topic, if any."""
        key = review_key(entra_id, topic)
        raw = self.redis.hget(REVIEWS_KEY, key)
        return _with_id(key, json.loads(raw)) if raw else None

    def review_count(self) -> int:
        return int(self.redis.hlen(REVIEWS_KEY))

    def resolve_review(self, entra_id: str, topic: str | None = None) -> bool:
        """Close the identity's item on `topic` (None: the item stored under the bare key given)."""
        return bool(self.redis.hdel(REVIEWS_KEY, review_key(entra_id, topic)))

    def topics_of(self, entra_id: str) -> set[str]:
        """The topics of a user's open items (the bare-id item, topic None, not included)."""
        prefix = review_key(entra_id, "")
        return {str(k)[len(prefix):] for k, _ in self.redis.hscan_iter(REVIEWS_KEY, match=f"{prefix}*", count=500)}

    def resolve_topic(self, entra_id: str, topic: str) -> bool:
        return self.resolve_review(entra_id, topic)

    # --- pending ownership transfers ---------------------------------------------------------------------------

    def add_pending_transfer(self, entra_id: str, sf_user_id: str | None, correlation_id: str | None) -> None:
        """Keyed by identity: a duplicate follow-up leaves one pending transfer, with its first request time."""
        previous = self.redis.hget(TRANSFERS_KEY, entra_id)
        requested = json.loads(previous)["requested_at"] if previous else time.time()
        item = {
            "entra_id": entra_id,
            "sf_user_id": sf_user_id,
            "correlation_id": correlation_id,
            "requested_at": requested,
        }
        self.redis.hset(TRANSFERS_KEY, entra_id, json.dumps(item))

    def pending_transfers(self) -> list[dict[str, Any]]:
        items = [json.loads(raw) for raw in self.redis.hvals(TRANSFERS_KEY)]
        return sorted(items, key=lambda item: item["requested_at"])

    def complete_transfer(self, entra_id: str) -> bool:
        return bool(self.redis.hdel(TRANSFERS_KEY, entra_id))



def _new_review_id() -> str:
    """Short enough to type, random enough never to collide among open review items."""
    return uuid.uuid4().hex[:10]


def review_key(entra_id: str, topic: str | None) -> str:
    """Where an item is stored: the bare Entra id (items written before topics existed), or `entra_id#topic`."""
    return entra_id if topic is None else f"{entra_id}#{topic}"


def _with_id(key: str, item: dict[str, Any]) -> dict[str, Any]:
    """Items stored before review ids existed get a stable one derived from their key."""
    if not item.get("id"):
        item["id"] = key.replace("-", "")[:10]
    item.setdefault("key", key)
    item.setdefault("entra_id", key.partition("#")[0])
    return item


def _link_key(entra_id: str) -> str:
    return f"{PREFIX}:link:{entra_id}"


def _tombstone_key(entra_id: str) -> str:
    return f"{PREFIX}:tombstone:{entra_id}"
