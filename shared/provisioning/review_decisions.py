"""What an admin decided about a review item, remembered so the next plan follows it.

- `force_create`: matching found candidates a person judged to be someone else: create a new Salesforce user
  (the flag is consumed by the batch that creates it).
- `ignore`: do not raise this review topic for this user again (an accepted exception, e.g. a value Salesforce keeps
  refusing that the admin chose to live with).
Linking to a chosen Salesforce user needs no memory of its own: it is the stored link.
"""

from __future__ import annotations

from typing import Any

FORCE_CREATE_KEY = "idsync:sync:force_create"  # set of Entra ids
IGNORED_KEY = "idsync:reviews:ignored"  # set of "entra_id|topic"


class ReviewDecisions:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def force_create(self, entra_id: str) -> None:
        self.redis.sadd(FORCE_CREATE_KEY, entra_id)

    def forced(self, entra_ids: list[str]) -> set[str]:
        if not entra_ids:
            return set()
        flags = self.redis.smismember(FORCE_CREATE_KEY, entra_ids)
        return {e for e, flag in zip(entra_ids, flags, strict=True) if flag}

    def created(self, entra_id: str) -> None:
        self.redis.srem(FORCE_CREATE_KEY, entra_id)

    def ignore(self, entra_id: str, topic: str | None) -> None:
        self.redis.sadd(IGNORED_KEY, f"{entra_id}|{topic or ''}")

    def ignored(self, entra_id: str, topic: str | None) -> bool:
        return bool(self.redis.sismember(IGNORED_KEY, f"{entra_id}|{topic or ''}"))
