"""The request poller's durable position: the newest `SystemModstamp` it has enqueued, and which requests (at
which stamp) it enqueued recently.

Why both: Salesforce has no push for this object, so the poller asks for Approved requests modified since its
watermark. It asks with an overlap (`requests.lookback_s` before the watermark), because a record is stamped when
its transaction starts and may become visible after a poll has passed its stamp; the "published" map then keeps
the overlap from enqueueing the same version of a request twice. A request approved again later has a new stamp
and is enqueued again. Saved only after the round's events are in the broker (at-least-once, like the delta
poller's deltaLink).

Keys: `idsync:requests:watermark` (the stamp, ISO 8601 UTC), `idsync:requests:published` hash request Id -> stamp.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

WATERMARK_KEY = "idsync:requests:watermark"
PUBLISHED_KEY = "idsync:requests:published"


def parse_stamp(value: str) -> datetime:
    """Salesforce's `2024-05-01T10:00:00.000+0000` (or ISO with Z / +00:00) -> an aware UTC datetime."""
    text = value.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def soql_datetime(value: datetime) -> str:
    """A SOQL datetime literal: `2024-05-01T10:00:00.000Z` (unquoted in the query)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class RequestWatermark:
    def __init__(self, redis_client: Any) -> None:
        self.redis = redis_client

    def get(self) -> datetime | None:
        raw = self.redis.get(WATERMARK_KEY)
        return parse_stamp(raw) if raw else None

    def published(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.redis.hgetall(PUBLISHED_KEY).items()}

    def mark_published(self, request_id: str, stamp: str) -> None:
        self.redis.hset(PUBLISHED_KEY, request_id, stamp)

    def save(self, watermark: datetime, *, keep_after: datetime) -> None:
        """Move the watermark (never backwards) and forget published entries older than `keep_after`."""
        current = self.get()
        if current is None or watermark > current:
            self.redis.set(WATERMARK_KEY, watermark.astimezone(UTC).isoformat())
        stale = [rid for rid, stamp in self.published().items() if parse_stamp(stamp) < keep_after]
        if stale:
            self.redis.hdel(PUBLISHED_KEY, *stale)

    @staticmethod
    def since(watermark: datetime | None, lookback_s: float) -> datetime | None:
        return None if watermark is None else watermark - timedelta(seconds=lookback_s)
