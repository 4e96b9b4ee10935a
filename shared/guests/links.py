"""What idsync remembers about Contacts: the Entra user -> Contact link, the reverse index manager -> reports, and
the per-domain lock that keeps two guests of one new company from creating two Accounts.

Why a link store when the Contact has a link field: the field is optional (an org may not want a custom field), a
link survives an admin clearing it, and a deleted guest can no longer be read from Graph, so their Contact must be
found by what was stored. Why a reverse index: a manager's rename is an event about the manager only, while the
Contacts showing their name belong to their reports (and, with a deeper manager chain, to everyone below them).
Keys (client with `decode_responses=True`):
- `idsync:contacts:link:{entra_id}` hash: contact_id, account_id, kind (guest/employee), email, upn, chain (JSON
  list of the manager ids shown on the Contact), updated_at;
- `idsync:contacts:owner` hash: contact_id -> entra_id (a Contact is never taken over by another Entra user);
- `idsync:contacts:reports:{manager_id}` set of linked entra ids whose chain includes that manager.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.errors import SERVICE_REDIS, RetryableError
from shared.redis_lock import RedisLock

PREFIX = "idsync:contacts"
OWNER_KEY = f"{PREFIX}:owner"
LOCK_PREFIX = "idsync:lock:guest-domain"
#: A domain lock outlives any find-or-create of an Account (two Salesforce calls) by far; it expires on its own if
#: its holder dies.
LOCK_TTL_MS = 30_000
#: How long a second guest of the same new domain waits for the first one's Account before retrying later.
LOCK_WAIT_S = 10.0

@dataclass(frozen=True)
class ContactLink:
    entra_id: str
    contact_id: str
    account_id: str | None
    kind: str
    email: str | None
    upn: str | None
    chain: tuple[str, ...]
    updated_at: float


def _link_key(entra_id: str) -> str:
    return f"{PREFIX}:link:{entra_id}"


def _reports_key(manager_id: str) -> str:
    return f"{PREFIX}:reports:{manager_id}"


class ContactLinks:
    def __init__(self, redis_client: Any) -> None:
        self.redis = redis_client

    def get(self, entra_id: str) -> ContactLink | None:
        data = self.redis.hgetall(_link_key(entra_id))
        if not data or not data.get("contact_id"):
            return None
        return ContactLink(
            entra_id=entra_id,
            contact_id=data["contact_id"],
            account_id=data.get("account_id") or None,
            kind=data.get("kind") or "guest",
            email=data.get("email") or None,
            upn=data.get("upn") or None,
            chain=tuple(json.loads(data.get("chain") or "[]")),
            updated_at=float(data.get("updated_at") or 0.0),
        )

    def record(self, entra_id: str, contact_id: str, *, account_id: str | None, kind: str, email: str | None,
            upn: str | None, chain: Sequence[str]) -> None:
        """Link, and move the user in the reverse index from their old managers to the new ones."""
        previous = self.get(entra_id)
        old_chain = set(previous.chain) if previous else set()
        new_chain = set(chain)
        pipe = self.redis.pipeline(transaction=True)
        fields = {"contact_id": contact_id, "kind": kind, "chain": json.dumps(list(chain)),
                  "updated_at": repr(time.time())}
        for name, value in (("account_id", account_id), ("email", email), ("upn", upn)):
            if value:
                fields[name] = value
        pipe.hset(_link_key(entra_id), mapping=fields)
        pipe.hset(OWNER_KEY, contact_id, entra_id)
        if previous and previous.contact_id != contact_id:
            pipe.hdel(OWNER_KEY, previous.contact_id)
        for manager in old_chain - new_chain:
            pipe.srem(_reports_key(manager), entra_id)
        for manager in new_chain - old_chain:
            pipe.sadd(_reports_key(manager), entra_id)
        pipe.execute()

    def owners(self, contact_ids: Iterable[str]) -> dict[str, str]:
        """Contact Id -> the Entra id idsync linked it to, for the ids that are linked."""
        ids = list(dict.fromkeys(contact_ids))
        if not ids:
            return {}
        values = self.redis.hmget(OWNER_KEY, ids)
        return {cid: owner for cid, owner in zip(ids, values, strict=True) if owner}

    def reports_of(self, manager_id: str) -> set[str]:
        """Linked users whose Contact shows this manager (directly, or in their manager chain)."""
        return {str(m) for m in self.redis.smembers(_reports_key(manager_id))}

    def unlinked(self, entra_ids: Sequence[str]) -> list[str]:
        """Of `entra_ids`, those with no Contact link yet (one pipeline of EXISTS)."""
        if not entra_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entra_id in entra_ids:
            pipe.exists(_link_key(entra_id))
        return [entra_id for entra_id, linked in zip(entra_ids, pipe.execute(), strict=True) if not linked]

    def concerned(self, entra_ids: Sequence[str]) -> list[str]:
        """The ids among `entra_ids` whose change touches a Contact: linked themselves, or shown on reports'
        Contacts. One round trip for the whole list (the routing hook calls this per batch)."""
        if not entra_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entra_id in entra_ids:
            pipe.exists(_link_key(entra_id))
            pipe.scard(_reports_key(entra_id))
        answers = pipe.execute()
        return [entra_id for n, entra_id in enumerate(entra_ids) if answers[2 * n] or answers[2 * n + 1]]

    # --- the per-domain lock --------------------------------------------------------------------------------
    @contextmanager
    def domain_lock(self, domain: str, *, wait_s: float = LOCK_WAIT_S, ttl_ms: int = LOCK_TTL_MS,
                    sleep: Any = time.sleep) -> Iterator[None]:
        """Held while one worker finds or creates the Account of `domain`; a second worker waits for it, then
        finds the Account the first one created. Raises RetryableError when it cannot get the lock in time."""
        lock = RedisLock(self.redis, f"{LOCK_PREFIX}:{domain}", ttl_ms, token=uuid.uuid4().hex)
        if not lock.acquire_within(wait_s, sleep=sleep):
            raise RetryableError(f"another worker holds the Account lock of {domain}", service=SERVICE_REDIS,
                                 code="domain_locked", retry_after=1.0)
        try:
            yield
        finally:
            lock.release()
