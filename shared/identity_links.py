"""What idsync remembers per identity: the Entra -> Salesforce link, revocation tombstones, review items and
pending ownership transfers.

Why each exists:
- link: a hard-deleted Entra user can no longer be read from Graph, so its last known UPN and Salesforce user id must
  be stored to find (and revoke) the Salesforce user at all.
- tombstone: events are hints and arrive out of order; a sync event observed before a revocation must not undo it
  (docs/decisions.md#events-are-hints). The tombstone holds the time the revocation was observed; only newer events
  may act. A reactivation clears it with a compare-and-delete (`clear_tombstone_if`): only the value it read and
  acted on, never a newer one a revocation wrote meanwhile.
- review: some revocations cannot finish (Salesforce refuses to deactivate the last admin or a default owner). The
  user stays frozen and a human must act; that is a review item, not a dead letter (nothing to replay). Each item has
  a stable short `id` (kept while the item is updated) for `idsync review show ID` and, later, `resolve`.
- pending transfer: the ownership-transfer follow-up after a revocation is recorded here until its worker exists.
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
        self.redis.hset(_link_key(entra_id), mapping=fields)

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
    ) -> dict[str, Any]:
        """One open item per identity; a repeat updates it (duplicate events must not multiply review work) and
        keeps its id and creation time. Returns the stored item."""
        now = time.time()
        raw = self.redis.hget(REVIEWS_KEY, entra_id)
        previous: dict[str, Any] = json.loads(raw) if raw else {}
        item = {
            "id": _with_id(entra_id, previous)["id"] if previous else _new_review_id(),
            "entra_id": entra_id,
            "upn": upn or previous.get("upn"),
            "sf_user_id": sf_user_id,
            "reason": reason,
            "code": code,
            "detail": detail,
            "correlation_id": correlation_id,
            "created_at": previous.get("created_at", now),
            "updated_at": now,
        }
        self.redis.hset(REVIEWS_KEY, entra_id, json.dumps(item))
        return item

    def list_reviews(self) -> list[dict[str, Any]]:
        items = [_with_id(str(key), json.loads(raw)) for key, raw in self.redis.hgetall(REVIEWS_KEY).items()]
        return sorted(items, key=lambda item: item["created_at"])

    def get_review(self, key: str) -> dict[str, Any] | None:
        """By review id, or by Entra object id (what the audit trail and logs carry)."""
        raw = self.redis.hget(REVIEWS_KEY, key)
        if raw:
            return _with_id(key, json.loads(raw))
        return next((item for item in self.list_reviews() if item["id"] == key), None)

    def review_count(self) -> int:
        return int(self.redis.hlen(REVIEWS_KEY))

    def resolve_review(self, entra_id: str) -> bool:
        return bool(self.redis.hdel(REVIEWS_KEY, entra_id))

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


def _with_id(entra_id: str, item: dict[str, Any]) -> dict[str, Any]:
    """Items stored before review ids existed get a stable one derived from their Entra id."""
    if not item.get("id"):
        item["id"] = entra_id.replace("-", "")[:10]
    return item


def _link_key(entra_id: str) -> str:
    return f"{PREFIX}:link:{entra_id}"


def _tombstone_key(entra_id: str) -> str:
    return f"{PREFIX}:tombstone:{entra_id}"
