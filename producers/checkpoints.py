"""Delta checkpoints in Redis: the saved deltaLink per resource, the last round's summary and outcome, the "resync
pending" marker, and the "published in this round" set.

Why Redis: it is already the broker, so the checkpoint lives next to the queue it guards, and any poller replica can
pick up where another stopped. Why a per-round set: a round that fails half-way keeps its old deltaLink (publish
before persist) and is read again; the set remembers which (object, kind, state) hints already reached the queue so
the retry re-sends only what is new. It is keyed by the round's starting link, so a different round never shares it.
Why a "resync pending" marker: once a link is discarded (410, or it points at another Graph base), the next rounds
must be full enumerations with the vanished-users check until one of them saves a new link; without the marker a
failed resync would leave "no link", which a start-from-now poller reads as "begin at now" and skips the gap.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any

from shared.delta_keys import delta_key
from shared.redis_values import argument_slices, as_text_or_none

#: A half-finished round's memory lives one day: long enough for any retry, short enough to never leak.
ROUND_SET_TTL_S = 24 * 3600
#: The stored error message is for a human glance in `idsync status`, not a log: keep it short.
ERROR_MESSAGE_CHARS = 200


class DeltaCheckpoints:
    """Checkpoint store for one tenant. Works with a redis-py client whether or not it decodes responses."""

    def __init__(self, redis: Any, tenant: str) -> None:
        self.redis = redis
        self.tenant = tenant

    def _key(self, resource: str, part: str) -> str:
        return delta_key(self.tenant, resource, part)

    # --- the deltaLink

    def get(self, resource: str) -> str | None:
        return as_text_or_none(self.redis.get(self._key(resource, "link")))

    def save(self, resource: str, delta_link: str) -> None:
        """Persist the link and end any pending resync, in one transaction; callers do this only after every event
        of the round is in the broker."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._key(resource, "link"), delta_link)
        pipe.delete(self._key(resource, "resync_pending"))
        pipe.execute()

    def discard(self, resource: str, reason: str) -> None:
        """Forget the link and require a full resync until a new link is saved (see the module docstring).

        The marker is written in the same transaction as the delete, so no reader ever sees "no link, no marker"."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._key(resource, "resync_pending"), json.dumps({"reason": reason, "time": time.time()}))
        pipe.delete(self._key(resource, "link"))
        pipe.execute()

    def resync_pending(self, resource: str) -> dict[str, Any] | None:
        """Why and since when a full resync is owed, or None."""
        raw = as_text_or_none(self.redis.get(self._key(resource, "resync_pending")))
        if raw is None:
            return None
        try:
            pending: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            pending = {"reason": "unknown"}
        return pending

    # --- the ids delta has shown us, so a full resync can tell who vanished

    def track(self, resource: str, live: Iterable[str], removed: Iterable[str]) -> None:
        """After an incremental round: remember objects that exist, forget those delta reported removed."""
        live, removed = list(live), list(removed)
        pipe = self.redis.pipeline(transaction=True)
        for chunk in argument_slices(live):
            pipe.sadd(self._key(resource, "known"), *chunk)
        for chunk in argument_slices(removed):
            pipe.srem(self._key(resource, "known"), *chunk)
        pipe.execute()

    def vanished(self, resource: str, live: Iterable[str]) -> set[str]:
        """After a full enumeration: the known ids it no longer contains (deleted while we were not looking).

        Stages the new set; `replace_known` makes it current once the events for the vanished ids are published.
        """
        staged = self._key(resource, "known:staged")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(staged)
        for chunk in argument_slices(list(live)):
            pipe.sadd(staged, *chunk)
        pipe.execute()
        return {t for t in (as_text_or_none(m) for m in self.redis.sdiff(self._key(resource, "known"), staged)) if t}

    def replace_known(self, resource: str) -> None:
        staged = self._key(resource, "known:staged")
        if self.redis.exists(staged):
            self.redis.rename(staged, self._key(resource, "known"))
        else:
            self.redis.delete(self._key(resource, "known"))

    def known_count(self, resource: str) -> int:
        return int(self.redis.scard(self._key(resource, "known")))

    # --- the last round's summary, for `idsync status`

    def record_round(self, resource: str, *, events: int, pages: int, items: int, resynced: bool) -> None:
        summary = {
            "time": time.time(),
            "events": events,
            "pages": pages,
            "items": items,
            "resynced": resynced,
        }
        self.redis.set(self._key(resource, "last_round"), json.dumps(summary))
        if resynced:
            self.redis.incr(self._key(resource, "resyncs"))

    # --- round outcomes, for `idsync health poller` and `idsync status`

    def _outcome_key(self, resource: str) -> str:
        return self._key(resource, "outcome")

    def record_success(self, resource: str, now: float | None = None) -> None:
        self.redis.hset(self._outcome_key(resource), mapping={
            "last_success": f"{now or time.time():.3f}", "consecutive_failures": 0})

    def record_failure(self, resource: str, error: BaseException, now: float | None = None) -> None:
        """Keep the error's class, a short message and the time; count failures in a row (reset by a success)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._outcome_key(resource), mapping={
            "last_error_class": type(error).__name__,
            "last_error": str(error)[:ERROR_MESSAGE_CHARS],
            "last_error_at": f"{now or time.time():.3f}",
        })
        pipe.hincrby(self._outcome_key(resource), "consecutive_failures", 1)
        pipe.execute()

    def record_progress(self, resource: str, now: float | None = None) -> None:
        """A page was read: a long round (a first enumeration of a big tenant) is alive, not stuck."""
        self.redis.hset(self._outcome_key(resource), "last_progress", f"{now or time.time():.3f}")

    def outcome(self, resource: str) -> dict[str, Any]:
        """{last_success, last_progress, consecutive_failures, last_error: {class, message, time} | None}."""
        stored = self.redis.hgetall(self._outcome_key(resource))
        raw = {as_text_or_none(k): as_text_or_none(v) for k, v in stored.items()}

        def stamp(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if value else None

        error = None
        if raw.get("last_error_class"):
            error = {"class": raw["last_error_class"], "message": raw.get("last_error") or "",
                     "time": stamp("last_error_at")}
        return {
            "last_success": stamp("last_success"),
            "last_progress": stamp("last_progress"),
            "consecutive_failures": int(raw.get("consecutive_failures") or 0),
            "last_error": error,
        }

    def last_round(self, resource: str) -> dict[str, Any] | None:
        raw = as_text_or_none(self.redis.get(self._key(resource, "last_round")))
        if raw is None:
            return None
        summary: dict[str, Any] = json.loads(raw)
        summary["resyncs"] = int(as_text_or_none(self.redis.get(self._key(resource, "resyncs"))) or 0)
        return summary

    # --- "already published in this round" dedupe

    def _round_key(self, resource: str, start_link: str | None) -> str:
        digest = hashlib.sha256((start_link or "<initial>").encode()).hexdigest()[:24]
        return self._key(resource, f"round:{digest}")

    def published_in_round(self, resource: str, start_link: str | None) -> set[str]:
        members = self.redis.smembers(self._round_key(resource, start_link))
        return {t for t in (as_text_or_none(m) for m in members) if t}

    def mark_published(self, resource: str, start_link: str | None, fingerprints: Iterable[str]) -> None:
        batch = list(fingerprints)
        if not batch:
            return
        key = self._round_key(resource, start_link)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(key, *batch)
        pipe.expire(key, ROUND_SET_TTL_S)
        pipe.execute()

    def finish_round(self, resource: str, start_link: str | None) -> None:
        """Drop the round's set once its deltaLink is saved: the next round starts from a different link."""
        self.redis.delete(self._round_key(resource, start_link))
