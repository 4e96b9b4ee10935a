"""`revocation.retry_deactivation`: a deactivation Salesforce refused (a blocker) is tried again.

Scheduled by `shared.deactivation_retries` when a revocation is blocked (every `IDSYNC_DEACTIVATION_RETRY_S`) and
published at once by `idsync review resolve ID --retry`. It is the revocation path again (Graph re-read, freeze if
needed, deactivate), so a user re-enabled meanwhile is handed to the sync lane instead, and the blocker's review
item is closed. Once the deactivation goes through, the review item is closed by the revocation path and the
ownership transfer runs again (records moved since, and the licence reclaim that waits for an inactive user).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from shared import deactivation_retries
from shared.audit import audit
from shared.dispatch import PendingWork, publish
from shared.entra_status import read_entra_user
from shared.events import EventKind, IdentityEvent
from workers.base import IdentityTask
from workers.revocation import DEACTIVATION_TOPIC, hand_to_sync, revoke


@shared_task(base=IdentityTask, bind=True, name="revocation.retry_deactivation")
def retry_deactivation(self: IdentityTask, event: dict[str, Any]) -> str:
    evt = IdentityEvent.from_message(event)
    ctx = self.ctx
    deactivation_retries.started(ctx.redis, evt.object_id)
    PendingWork(ctx.redis).clear(self.name, evt.object_id)
    state = read_entra_user(ctx.graph(self.lane), evt.object_id)
    if state.enabled:
        if ctx.links.resolve_review(evt.object_id, DEACTIVATION_TOPIC):
            audit(ctx.redis, "review_resolved", evt.object_id, None, "user_enabled", evt.correlation_id,
                  upn=state.upn, topic=DEACTIVATION_TOPIC)
        return hand_to_sync(self, evt)
    outcome = revoke(self, evt, state, follow_up=False)
    if outcome == "revoked":
        publish(self.app, evt.follow_up(EventKind.OWNERSHIP_TRANSFER))
    return outcome
