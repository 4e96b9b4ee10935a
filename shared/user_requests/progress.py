"""Per request: a lock (one worker at a time) and how far it got, keyed by the Salesforce request Id.

Why both: the request Id is the idempotency key. A request seen twice (the poller's overlap, a redelivered message
after a worker died) must create one Entra user: the lock keeps two deliveries from running side by side, and the
progress record remembers the Entra user an earlier attempt created, so a retry continues with it (group
membership, write-back) instead of creating another. The progress record is a shortcut, not the only safety: a
user is also recognised by the request Id idsync writes into one of its extension attributes.

Keys: `idsync:request:lock:{id}` (token, expires with the task time limit), `idsync:request:{id}` hash (entra_id,
upn, step, updated_at).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.redis_lock import RedisLock

PREFIX = "idsync:request"
#: Progress is kept this long after the last step: long after any retry or redelivery of the request's message.
PROGRESS_TTL_S = 30 * 86_400

class RequestBusy(Exception):  # noqa: N818 - a state, not a failure
    """Another worker holds this request; `retry_after_s` is how long its lock may still last."""

    def __init__(self, request_id: str, retry_after_s: float) -> None:
        super().__init__(f"request {request_id} is being handled by another worker")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Progress:
    entra_id: str | None = None
    upn: str | None = None
    step: str | None = None


class RequestProgress:
    def __init__(self, redis_client: Any) -> None:
        self.redis = redis_client

    @contextmanager
    def lock(self, request_id: str, ttl_s: float) -> Iterator[None]:
        lock = RedisLock(self.redis, f"{PREFIX}:lock:{request_id}", int(ttl_s * 1000), token=uuid.uuid4().hex)
        if not lock.acquire():
            raise RequestBusy(request_id, max(1.0, lock.remaining_s() or 1.0))
        try:
            yield
        finally:
            lock.release()

    def get(self, request_id: str) -> Progress:
        data = self.redis.hgetall(f"{PREFIX}:{request_id}")
        return Progress(data.get("entra_id") or None, data.get("upn") or None, data.get("step") or None)

    def record(self, request_id: str, step: str, *, entra_id: str | None = None, upn: str | None = None) -> None:
        fields = {"step": step, "updated_at": repr(time.time())}
        if entra_id:
            fields["entra_id"] = entra_id
        if upn:
            fields["upn"] = upn
        key = f"{PREFIX}:{request_id}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, PROGRESS_TTL_S)
        pipe.execute()
