"""Give one user a book of business: open and closed CRM records owned by them, for leaver scenarios.

Why a helper of its own: the seed spreads records thinly over many owners, while a leaver test or benchmark needs
one person with hundreds of open opportunities, leads and cases (and closed ones that must stay untouched). Rows
are built like the seed's (`Org.bulk_load`, computed fields filled), so 1,000 records take milliseconds and no API
calls are counted. Used in-process by tests and `bench/offboarding.py` (direct state access).
"""

from __future__ import annotations

from typing import Any

from sandbox.salesforce.org import Org
from sandbox.salesforce.rules import compute

#: object -> (open values, closed values): what makes a record open or closed for the usual filters.
_STATES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "Opportunity": ({"StageName": "Prospecting", "CloseDate": "2027-06-30"},
                    {"StageName": "Closed Won", "CloseDate": "2025-06-30"}),
    "Lead": ({"Status": "Open - Not Contacted", "IsConverted": False},
             {"Status": "Closed - Converted", "IsConverted": True}),
    "Case": ({"Status": "New", "Origin": "Web"}, {"Status": "Closed", "Origin": "Web"}),
    "Task": ({"Status": "Not Started"}, {"Status": "Completed"}),
    "Account": ({}, {}),
    "Contact": ({}, {}),
}


def _row(org: Org, sobject: str, owner_id: str, n: int, values: dict[str, Any]) -> dict[str, Any]:
    od = org.schema[sobject]
    rec: dict[str, Any] = {f.name: (False if f.type == "boolean" else None) for f in od.fields.values()}
    for f in od.fields.values():
        if f.default is not None and f.type != "boolean" and not str(f.default).startswith("$"):
            rec[f.name] = f.default
    now = org.now_str()
    actor = org.integration_user_id
    rec.update(Id=org.new_id(sobject), IsDeleted=False, CreatedDate=now, LastModifiedDate=now, SystemModstamp=now,
               CreatedById=actor, LastModifiedById=actor, OwnerId=owner_id)
    label = f"{owner_id[-6:]}-{n:05d}"
    names = {"Opportunity": {"Name": f"Leader deal {label}"}, "Account": {"Name": f"Leader account {label}"},
             "Lead": {"LastName": f"Leader lead {label}", "Company": f"Prospect {label}"},
             "Contact": {"LastName": f"Leader contact {label}"}, "Case": {"Subject": f"Leader case {label}"},
             "Task": {"Subject": f"Leader task {label}"}}
    rec.update(names.get(sobject, {"Name": f"Leader {sobject} {label}"}))
    rec.update(values)
    compute(org, od, rec, None)
    return rec


def give_records(org: Org, owner_id: str, open_counts: dict[str, int],
                 closed_counts: dict[str, int] | None = None) -> dict[str, dict[str, list[str]]]:
    """Create records owned by `owner_id`; returns {"open": {object: ids}, "closed": {object: ids}}."""
    created: dict[str, dict[str, list[str]]] = {"open": {}, "closed": {}}
    with org.lock:
        for state, counts in (("open", open_counts), ("closed", closed_counts or {})):
            for sobject, count in counts.items():
                values = _STATES.get(sobject, ({}, {}))[0 if state == "open" else 1]
                rows = [_row(org, sobject, owner_id, i, values) for i in range(count)]
                org.bulk_load(sobject, rows)
                created[state][sobject] = [r["Id"] for r in rows]
    return created


def owned_records(org: Org, owner_id: str, sobjects: tuple[str, ...] = tuple(_STATES)) -> dict[str, list[dict[str,
                                                                                                           Any]]]:
    """The records `owner_id` owns now, per object (live rows; do not mutate)."""
    with org.lock:
        return {name: [r for r in org.live[name].values() if r.get("OwnerId") == owner_id] for name in sobjects
                if name in org.live}
