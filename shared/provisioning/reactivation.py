"""Turning a user idsync revoked back on, when Entra says they are enabled (and in scope) again.

Only what idsync did is undone: the revocation tombstone (shared/identity_links.py) marks users idsync froze and
deactivated. A Salesforce user who is inactive or frozen without it was switched off by someone in Salesforce
(licences, an investigation); an enabled Entra account is no reason to turn them back on.

Against a revocation racing it: the tombstone read at the start is read again right before activating (a newer one
means a revocation is under way: do nothing), and cleared afterwards with a compare-and-delete (only the value read,
never one a revocation wrote meanwhile). If that delete finds a newer tombstone, a revocation ran during the
activation and may have been undone by it: the user goes back to the revocation lane, which re-reads Graph and
revokes again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.audit import audit
from shared.deprovision_guard import back_in_scope
from shared.identity_links import IdentityLinks
from shared.offboarding.scope import clear_left_scope

RULE = "joiner:entra_enabled"


def reactivate_revoked(
    sf: Any,
    links: IdentityLinks,
    redis: Any,
    *,
    entra_id: str,
    upn: str | None,
    sf_user_id: str,
    is_active: bool | None,
    tombstone: float,
    correlation_id: str | None,
    source_event: str | None,
    observed_at: float | None,
    back_to_revocation: Callable[[], None],
) -> str:
    """Activate, then unfreeze; returns reactivated, in_sync, skipped_tombstone or handed_to_revocation."""
    if links.tombstone(entra_id) != tombstone:
        # A revocation was observed since the first read (or another reactivation finished): it decides, not us.
        audit(redis, "sync_user", entra_id, sf_user_id, "skipped_tombstone", correlation_id,
              reason="revocation_under_way", upn=upn)
        return "skipped_tombstone"
    changed = False
    if is_active is not True:
        # Activate before unfreezing: if activation is refused (e.g. no licence), the user stays unable to log in.
        sf.activate_user(sf_user_id)
        audit(redis, "activate", entra_id, sf_user_id, "done", correlation_id, upn=upn,
              before={"IsActive": is_active}, after={"IsActive": True}, rule=RULE, source_event=source_event)
        changed = True
    login = sf.get_user_login(sf_user_id)
    if login is not None and login.get("IsFrozen"):
        sf.unfreeze_user(sf_user_id)
        audit(redis, "unfreeze", entra_id, sf_user_id, "done", correlation_id, upn=upn, before={"IsFrozen": True},
              after={"IsFrozen": False}, rule=RULE, source_event=source_event)
        changed = True
    if not links.clear_tombstone_if(entra_id, tombstone):
        back_to_revocation()
        audit(redis, "sync_user", entra_id, sf_user_id, "handed_to_revocation", correlation_id,
              reason="revoked_during_reactivation", upn=upn)
        return "handed_to_revocation"
    clear_left_scope(redis, entra_id)  # back in scope: a later transfer must not treat them as a leaver
    back_in_scope(redis, links, entra_id)  # and a rejected mass-deprovisioning hold no longer concerns them
    outcome = "reactivated" if changed else "in_sync"
    audit(redis, "sync_user", entra_id, sf_user_id, outcome, correlation_id, upn=upn, source_event=source_event,
          observed_at=observed_at)
    return outcome
