"""The Salesforce sink: one `Identity_Audit__c` record per chain entry, upserted in batches of 200 through sObject
Collections (PATCH composite/sobjects/Identity_Audit__c/Audit_Key__c), so a batch sent twice is stored once.

Why the whole entry goes into `Detail__c`: Salesforce admins get reportable fields (action, outcome, user, time,
latency), and the canonical entry text stays available for re-hashing. The audit key is `<seq>-<hash prefix>`: unique
per entry even if a new trail (fresh Redis) starts again at seq 1, so an old record is never overwritten.

Calls go through the fleet limiter on the sync lane: audit records never take the API share reserved for
revocations, and while sync is paused near the daily limit, this sink waits too (its backlog grows in Redis).
Object and fields: see docs/audit.md ("Salesforce sink"); the sandbox schema has them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.audit_events import canonical_json

SOBJECT = "Identity_Audit__c"
EXTERNAL_ID = "Audit_Key__c"

#: idsync action -> Action__c picklist value (restricted picklist: unknown actions map to "Other").
ACTIONS = {
    "provision": "Create", "field_update": "Update", "entitlement_add": "AssignPermissionSet",
    "entitlement_remove": "RemovePermissionSet", "freeze": "Freeze", "unfreeze": "Unfreeze",
    "deactivate": "Deactivate", "activate": "Reactivate", "reactivate": "Reactivate", "revoke": "Revoke",
    "record_transfer": "ReassignRecords", "transfer_ownership": "ReassignRecords", "sync_user": "Sync",
    "review_opened": "ReviewOpened", "review_resolved": "ReviewResolved", "dlq_replay": "DlqReplay",
    "guard_held": "GuardHeld", "guard_approved": "GuardApproved", "reverse_flow_create": "ReverseFlowCreate",
    "mapping_reloaded": "MappingReloaded",
}
OUTCOMES = {
    **dict.fromkeys(("done", "ok", "revoked", "reactivated", "in_sync", "recorded", "replayed", "created", "updated",
                     "approved"), "Success"),
    **dict.fromkeys(("blocked", "frozen_blocked"), "Blocked"),
    **dict.fromkeys(("failed", "error", "dead_lettered"), "Failed"),
    **dict.fromkeys(("pending", "held"), "Pending"),
    **dict.fromkeys(("no_salesforce_user", "already_revoked", "skipped", "skipped_tombstone", "handed_to_sync",
                     "handed_to_revocation"), "Skipped"),
    "retry": "Retried",
}


def _sf_datetime(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def record(entry: dict[str, Any]) -> dict[str, Any]:
    event = entry.get("event") or {}
    checkpoint = entry.get("type") == "checkpoint"
    action = "Checkpoint" if checkpoint else ACTIONS.get(str(event.get("action")), "Other")
    rec: dict[str, Any] = {
        EXTERNAL_ID: f"{entry['seq']}-{entry['hash'][:16]}",
        "Name": f"#{entry['seq']} {'checkpoint' if checkpoint else event.get('action', '')}"[:80],
        "Sequence__c": entry["seq"],
        "Entry_Hash__c": entry["hash"],
        "Prev_Hash__c": entry["prev_hash"],
        "Action__c": action,
        "Occurred_At__c": _sf_datetime(float(event.get("time") or entry["chained_at"])),
        "Detail__c": canonical_json(entry),
    }
    if not checkpoint:
        rec["Outcome__c"] = OUTCOMES.get(str(event.get("outcome")), "Other")
        for field, key, limit in (("Entra_Id__c", "entra_id", 64), ("Upn__c", "upn", 255),
                                  ("Correlation_Id__c", "correlation_id", 64)):
            if event.get(key):
                rec[field] = str(event[key])[:limit]
        sf_user = str(event.get("sf_user_id") or "")
        if sf_user.startswith("005") and len(sf_user) in (15, 18):  # a User id: the lookup must point at a user
            rec["Salesforce_User__c"] = sf_user
        if event.get("latency_ms") is not None:
            rec["Latency_Ms__c"] = event["latency_ms"]
    return rec


class SalesforceSink:
    name = "salesforce"

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Any) -> SalesforceSink:
        from shared.limiter import Limiter
        from shared.redis_conn import get_redis
        from shared.salesforce_client import SalesforceClient

        limiter = Limiter(get_redis(str(settings.redis_url)), settings) if settings.redis_url else None
        return cls(SalesforceClient(settings, limiter=limiter, lane="sync"))

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        results = self._client.collections_upsert(SOBJECT, EXTERNAL_ID, [record(e) for e in entries])
        failed = [(e["seq"], r) for e, r in zip(entries, results, strict=False) if not r.get("success")]
        if failed or len(results) != len(entries):
            seq, result = failed[0] if failed else (entries[-1]["seq"], {})
            errors = result.get("errors") or [{}]
            code = errors[0].get("statusCode") or errors[0].get("errorCode") or "missing result"
            raise RuntimeError(f"{len(failed)} record(s) refused, first seq {seq}: {code}: "
                               f"{str(errors[0].get('message', ''))[:200]}")

    def close(self) -> None:
        """The client keeps its session: it re-authenticates by itself when the token expires."""
