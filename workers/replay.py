"""Replay dead letters: publish the message again, unchanged, once the cause has been fixed.

Why claim -> publish -> remove -> release: two operators (or a CLI and a cron) replaying the same entry must publish
it once. The claim (SET NX) lets one replayer in; the entry is removed only after the publish returned, so a failed
publish leaves it in the DLQ; a second replayer that gets the claim afterwards finds no entry and does nothing.
The replayed message gets a new task id (fresh delivery and retry budgets) and a `replay_of` header naming the entry;
it goes out through `shared.dispatch.republish` (task name checked against the dispatch table, fresh `published_at`,
so the time spent in the DLQ does not show as queue age).
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.dispatch import republish
from shared.dlq import DeadLetterQueue
from shared.logging import get_logger

log = get_logger("idsync.replay")

#: How long one replay may hold an entry; far longer than a publish takes.
CLAIM_TTL_S = 60.0


def replay(app: Any, dlq: DeadLetterQueue, entry_id: str) -> bool:
    """Republish one entry; True if this call published it. A publish error propagates and keeps the entry."""
    if not dlq.claim(entry_id, ttl_s=CLAIM_TTL_S):
        return False
    try:
        entry = dlq.get(entry_id)
        if entry is None:
            return False
        new_id = uuid.uuid4().hex
        republish(app, entry.task, entry.args, entry.kwargs, {**entry.headers, "replay_of": entry.id}, task_id=new_id)
        dlq.remove(entry_id)
        log.info(
            "dead_letter_replayed",
            entry_id=entry_id,
            task=entry.task,
            new_task_id=new_id,
            correlation_id=entry.correlation_id,
        )
        return True
    finally:
        dlq.release(entry_id)


def replay_all(app: Any, dlq: DeadLetterQueue, lane: str | None = None, batch: int = 100) -> tuple[int, int]:
    """Replay every entry (of one lane); returns (replayed, not replayed: publish failed or taken by another)."""
    ok = failed = 0
    seen: set[str] = set()
    while True:
        entries = [e for e in dlq.list(lane=lane, limit=batch + len(seen)) if e.id not in seen]
        if not entries:
            return ok, failed
        for entry in entries:
            seen.add(entry.id)
            try:
                published = replay(app, dlq, entry.id)
            except Exception as exc:  # one bad entry must not stop the rest
                log.error("dead_letter_replay_failed", entry_id=entry.id, error=str(exc))
                published = False
            if published:
                ok += 1
            else:
                failed += 1
