"""A plan, seen as drift: one report row per change, with what kind of drift it is and who caused it.

Kinds of drift (`drift`):
- `missing_in_salesforce`: an in-scope Entra user without a Salesforce user (the plan creates one);
- `field`: a mapped User field (or profile, role) differs from what Entra says; Entra is authoritative;
- `entitlement`: a permission set, group, licence, public group or queue idsync manages is missing or no longer due
  (only what idsync granted is ever removed);
- `out_of_scope`: a linked user the mapping no longer covers, or disabled or deleted in Entra (deprovisioned);
- `link`: an existing Salesforce user found by a matching rule, linked before anything else is written;
- `reactivation`: a user idsync deactivated who is enabled and in scope again (turned back on). A user someone else
  switched off in Salesforce is a review item instead (`INACTIVE_IN_SALESFORCE`).

Who caused it: Salesforce keeps no per-field history by default, but every record has `LastModifiedById`. A field
drift on a record last modified by someone other than idsync's own user is reported as a direct Salesforce edit,
naming that user and the time; an entitlement idsync granted that is gone is one too (someone removed it in
Salesforce). Attribution is per record: if a person edited Title and a flow later touched the record, the flow is
named. One exception: on a user matched for the first time (idsync never wrote the record), a field that is empty
in Salesforce was never filled rather than edited, so it is plain drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.engine import Change, ChangeKind, Plan, PlanAction

#: The report's name for each plan action (`noop` reads "unchanged" to a person).
ACTION_NAMES = {PlanAction.CREATE: "create", PlanAction.UPDATE: "update", PlanAction.DEPROVISION: "deprovision",
                PlanAction.REVIEW: "review", PlanAction.NOOP: "unchanged", PlanAction.IGNORE: "ignored"}

_FIELD = {
    ChangeKind.CREATE_USER: "User",
    ChangeKind.SET_PROFILE: "ProfileId",
    ChangeKind.SET_ROLE: "UserRoleId",
    ChangeKind.LINK: "link",
    ChangeKind.DEPROVISION: "IsActive",
    ChangeKind.ADD_LICENCE: "PermissionSetLicense",
    ChangeKind.REMOVE_LICENCE: "PermissionSetLicense",
    ChangeKind.ADD_PERMISSION_SET: "PermissionSet",
    ChangeKind.REMOVE_PERMISSION_SET: "PermissionSet",
    ChangeKind.ADD_PERMISSION_SET_GROUP: "PermissionSetGroup",
    ChangeKind.REMOVE_PERMISSION_SET_GROUP: "PermissionSetGroup",
    ChangeKind.ADD_GROUP: "PublicGroup",
    ChangeKind.REMOVE_GROUP: "PublicGroup",
    ChangeKind.ADD_QUEUE: "Queue",
    ChangeKind.REMOVE_QUEUE: "Queue",
}
_FIELD_DRIFT = frozenset({ChangeKind.UPDATE_FIELD, ChangeKind.SET_PROFILE, ChangeKind.SET_ROLE})


def drift_kind(change: Change) -> str:
    if change.kind is ChangeKind.CREATE_USER:
        return "missing_in_salesforce"
    if change.kind in _FIELD_DRIFT:
        return "field"
    if change.kind is ChangeKind.DEPROVISION:
        return "out_of_scope"
    if change.kind is ChangeKind.LINK:
        return "link"
    return "entitlement"


def same_user_id(a: str | None, b: str | None) -> bool:
    """Salesforce ids compare on their 15-character case-sensitive form (18-character ids add a checksum)."""
    return bool(a and b and a[:15] == b[:15])


def change_rows(p: Plan, record: Mapping[str, Any] | None, granted: frozenset[str], own_user_id: str | None,
                names: Mapping[str, str], id_names: Mapping[str, Mapping[str, str]] | None = None
                ) -> list[dict[str, Any]]:
    """One row per change of the plan. `record` is the Salesforce user as read (None for a create), `granted` what
    idsync had granted the user, `names` Salesforce user id -> Username (to name who edited a record). `id_names`
    (field -> id -> name, e.g. ProfileId -> profile names) shows a new user's record with names, as updates are
    shown, instead of ids a person cannot read."""
    rows: list[dict[str, Any]] = []
    modified_by = str(record.get("LastModifiedById") or "") if record is not None else ""
    by_someone_else = bool(modified_by) and own_user_id is not None and not same_user_id(modified_by, own_user_id)
    # A user matched for the first time was never written by idsync: a field it never had filled is not an edit.
    first_link = any(change.kind is ChangeKind.LINK for change in p.changes)
    for change in p.changes:
        kind = drift_kind(change)
        before, after = change.before, change.after
        if change.kind is ChangeKind.DEPROVISION:
            before, after = True, False
        elif change.kind is ChangeKind.CREATE_USER and id_names and isinstance(after, Mapping):
            after = {k: id_names[k].get(str(v), v) if k in id_names and v else v for k, v in after.items()}
        direct = False
        note = ""
        if kind == "field" and by_someone_else and not (first_link and before in (None, "")):
            direct = True
            note = "record last modified in Salesforce by someone other than idsync"
        elif change.kind.value.startswith("add_") and any(key in granted for key in change.grants):
            direct = True
            note = "idsync had granted it; removed in Salesforce"
        row: dict[str, Any] = {
            "entra_id": p.entra_id,
            "salesforce_id": p.sf_user_id,
            "upn": p.upn,
            "action": ACTION_NAMES[p.action],
            "change": change.kind.value,
            "field": change.target if change.kind is ChangeKind.UPDATE_FIELD else _FIELD[change.kind],
            "before": before,
            "after": after,
            "rule": change.rule,
            "drift": kind,
            "direct_edit": direct,
        }
        if direct:
            row["note"] = note
            if kind == "field":
                row["modified_by"] = modified_by
                row["modified_by_name"] = names.get(modified_by) or names.get(modified_by[:15]) or modified_by
                row["modified_at"] = record.get("LastModifiedDate") if record is not None else None
        rows.append(row)
    return rows


def review_rows(p: Plan) -> list[dict[str, Any]]:
    """The plan's review items: unmatched or ambiguous users, values Salesforce would refuse, unknown names."""
    return [{"entra_id": item.entra_id, "upn": item.upn, "salesforce_id": p.sf_user_id, "code": item.code.value,
             "target": item.target, "message": item.message, "where": item.where,
             "candidates": list(item.candidates)} for item in p.reviews]


def inactive_rows(p: Plan, record: Mapping[str, Any] | None, revoked_by_idsync: bool
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(change rows, review rows) for a user Entra keeps in scope whose Salesforce user is inactive: idsync turns
    back on only a user it deactivated itself (a reactivation); anyone else was switched off in Salesforce, which
    a person must confirm (a review item, as the sync lane raises)."""
    if (record is None or record.get("IsActive") is not False or p.action not in (PlanAction.UPDATE, PlanAction.NOOP)
            or not p.in_scope):
        return [], []
    if revoked_by_idsync:
        return [{"entra_id": p.entra_id, "salesforce_id": p.sf_user_id, "upn": p.upn, "action": ACTION_NAMES[p.action],
                 "change": "reactivate", "field": "IsActive", "before": False, "after": True,
                 "rule": "idsync deactivated this user; Entra has them enabled and in scope again",
                 "drift": "reactivation", "direct_edit": False}], []
    return [], [{"entra_id": p.entra_id, "upn": p.upn, "salesforce_id": p.sf_user_id,
                 "code": "INACTIVE_IN_SALESFORCE", "target": "IsActive",
                 "message": f"{p.upn}: enabled and in scope in Entra, but inactive in Salesforce, and idsync did not "
                            "deactivate them: activate the user in Salesforce (Setup > Users) if that is right",
                 "where": None, "candidates": []}]


def deprovision_row(p: Plan) -> dict[str, Any]:
    return {"entra_id": p.entra_id, "salesforce_id": p.sf_user_id, "upn": p.upn, "reason": p.reason}
