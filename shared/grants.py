"""What idsync itself granted each user in Salesforce: the ledger behind "idsync removes only what it granted".

Why a ledger: Okta's connector overwrites every permission set it did not grant, which is its admins' top complaint.
An entitlement (permission set, permission set group, licence, public group, queue, role) is removed by idsync only
if idsync's own record says idsync granted it; anything an admin assigned by hand stays, and `sync-user` lists it as
unmanaged. Keys look like `ps:Sales_Cloud_User`, `psg:Sales_Bundle`, `psl:SalesCloudUserPsl`, `group:All_Sales`,
`queue:Support_Queue`, `role` (see shared/engine). Kept per Entra user id, so it follows the identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PREFIX = "idsync:grants"


def _key(entra_id: str) -> str:
    return f"{PREFIX}:{entra_id}"


class Grants:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def of(self, entra_ids: list[str]) -> dict[str, frozenset[str]]:
        """entra id -> the entitlement keys idsync granted (empty when none), one pipeline for a whole batch."""
        if not entra_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entra_id in entra_ids:
            pipe.smembers(_key(entra_id))
        return {e: frozenset(str(k) for k in keys) for e, keys in zip(entra_ids, pipe.execute(), strict=True)}

    def record(self, entra_id: str, added: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
        add, remove = list(added), list(removed)
        if not add and not remove:
            return
        pipe = self.redis.pipeline(transaction=True)
        if add:
            pipe.sadd(_key(entra_id), *add)
        if remove:
            pipe.srem(_key(entra_id), *remove)
        pipe.execute()

    def forget(self, entra_id: str) -> None:
        self.redis.delete(_key(entra_id))
