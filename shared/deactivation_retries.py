"""Blocked deactivations are tried again on a schedule, one pending retry per user.

Why a schedule: an admin who removes the blocker (a new default lead owner, say) should not also have to come back
to idsync; the next retry deactivates the user. Why parking: the retry waits `IDSYNC_DEACTIVATION_RETRY_S` (15
minutes by default) in the parking set, and the scheduler (`idsync beat`) republishes it through
`shared.dispatch.republish` when due, like any parked message (a countdown that long would not survive Redis's
visibility timeout). `idsync review resolve ID --retry` publishes one at once.

Why a marker: every duplicate "user disabled" hint for a blocked user runs the revocation again and is blocked again;
without `SET NX` each would park another retry, and the retries would multiply every interval.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared import parking
from shared.dispatch import known_task, lane_of, message_headers
from shared.events import EventKind, IdentityEvent

RETRY_TASK = "revocation.retry_deactivation"
MARK_PREFIX = "idsync:deactivation-retry"


def _mark(entra_id: str) -> str:
    return f"{MARK_PREFIX}:{entra_id}"


def schedule(redis: Any, event: IdentityEvent, delay_s: float) -> bool:
    """Park one retry of the deactivation of `event.object_id` for `delay_s`, unless one is pending already;
    True if one was parked."""
    name = known_task(RETRY_TASK)
    if not redis.set(_mark(event.object_id), "1", nx=True, ex=int(delay_s * 2) + 60):
        return False
    retry = event.follow_up(EventKind.USER_DISABLED)
    parking.park(redis, name, [retry.to_message()], {}, message_headers(retry), lane_of(name), time.time() + delay_s,
                 task_id=uuid.uuid4().hex)
    return True


def started(redis: Any, entra_id: str) -> None:
    """The retry runs now: a blocked outcome may schedule the next one."""
    redis.delete(_mark(entra_id))


def pending(redis: Any, entra_id: str) -> bool:
    return bool(redis.exists(_mark(entra_id)))
