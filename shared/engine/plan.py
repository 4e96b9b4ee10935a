"""THE engine: `plan(entra_user, mapping, state, catalog, match)` -> `Plan`, a pure function.

The desired state (`desired_user`) diffed against what Salesforce holds (`SalesforceUserState`) into an ordered list
of changes, each with before, after and the rule behind it. The live sync lane, `idsync sync-user`, reconciliation
and every `--dry-run` call this one function; nothing else decides what a user gets.

Decisions (docs/mapping.md tells admins the same):
- not linked + in scope -> `create`: one `create_user` change with every field (and the profile, role), then the
  entitlement adds. Not attempted (action `review`) when a required field or the profile has no value: Salesforce
  would refuse it (REQUIRED_FIELD_MISSING) and a retry could not help.
- linked + in scope -> `update` (or `noop`): fields whose value differs, profile and role, entitlement adds, and
  removals ONLY of entitlements idsync granted (`state.granted`) that are no longer wanted. Anything else the user
  holds is left alone and listed in `unmanaged`; a wanted entitlement someone else already gave is not adopted.
- linked + out of scope (disabled, deleted, or outside `scope`) -> `deprovision` (the caller hands it to the
  revocation lane); `noop` if the Salesforce user is already inactive.
- not linked + out of scope -> `ignore`. A record found by a matching rule for a user out of scope counts as linked
  only when the evidence is idsync's own (stored link or link field) or the user is disabled/deleted in Entra (the
  leaver path): idsync never deactivates an account it never managed for an enabled user outside its scope.
- Review items never stop the rest: an unknown permission set leaves the fields and other entitlements to apply.

Order of changes (the executor relies on it): link, then the User (create, or field/profile/role updates), then
licences, permission sets, permission set groups, public groups and queues; removals after additions, in reverse
(so a licence is removed after the permission sets needing it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.engine.catalog import Catalog
from shared.engine.desired import ENTITLEMENT_KINDS, DesiredUser, Grant, desired_user
from shared.engine.entra import EntraUser
from shared.engine.matching import STORED_LINK, MatchOutcome
from shared.engine.reviews import ReviewCode, ReviewItem
from shared.engine.salesforce_state import SalesforceUserState, entitlement_key
from shared.mapping.model import Mapping

if TYPE_CHECKING:
    from rich.console import Console

#: Fields Salesforce requires to create a User, whatever the org's describe says.
REQUIRED_ON_CREATE = ("Username", "LastName", "Email", "Alias", "TimeZoneSidKey", "LocaleSidKey",
                      "EmailEncodingKey", "LanguageLocaleKey", "ProfileId")
_REQUIRED = frozenset(REQUIRED_ON_CREATE)
_CASE_INSENSITIVE = frozenset({"Username", "Email"})


class ChangeKind(StrEnum):
    LINK = "link"
    CREATE_USER = "create_user"
    UPDATE_FIELD = "update_field"
    SET_PROFILE = "set_profile"
    SET_ROLE = "set_role"
    ADD_LICENCE = "add_licence"
    ADD_PERMISSION_SET = "add_permission_set"
    ADD_PERMISSION_SET_GROUP = "add_permission_set_group"
    ADD_GROUP = "add_group"
    ADD_QUEUE = "add_queue"
    REMOVE_GROUP = "remove_group"
    REMOVE_QUEUE = "remove_queue"
    REMOVE_PERMISSION_SET_GROUP = "remove_permission_set_group"
    REMOVE_PERMISSION_SET = "remove_permission_set"
    REMOVE_LICENCE = "remove_licence"
    DEPROVISION = "deprovision"


class PlanAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    NOOP = "noop"
    DEPROVISION = "deprovision"
    IGNORE = "ignore"
    REVIEW = "review"


_ADD = {"psl": ChangeKind.ADD_LICENCE, "ps": ChangeKind.ADD_PERMISSION_SET,
        "psg": ChangeKind.ADD_PERMISSION_SET_GROUP, "group": ChangeKind.ADD_GROUP, "queue": ChangeKind.ADD_QUEUE}
_REMOVE = {"psl": ChangeKind.REMOVE_LICENCE, "ps": ChangeKind.REMOVE_PERMISSION_SET,
           "psg": ChangeKind.REMOVE_PERMISSION_SET_GROUP, "group": ChangeKind.REMOVE_GROUP,
           "queue": ChangeKind.REMOVE_QUEUE}
_REMOVAL_ORDER = ("group", "queue", "psg", "ps", "psl")


@dataclass(frozen=True, slots=True)
class Change:
    """One step. `sf_id` is what to assign (profile, role, permission set, PSG, licence, group or queue id; the
    user for `link`); `record_id` the existing assignment or membership to delete (removals). `grants`/`revokes`
    are the entitlement keys to add to / drop from idsync's granted list once the step succeeded."""

    kind: ChangeKind
    target: str
    before: Any
    after: Any
    rule: str
    sf_id: str | None = None
    record_id: str | None = None
    grants: tuple[str, ...] = ()
    revokes: tuple[str, ...] = ()
    field_rules: AbcMapping[str, str] | None = None  # create_user: the rule behind each field of the record

    def to_dict(self) -> dict[str, Any]:
        out = {
            "kind": self.kind.value,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "rule": self.rule,
            "sf_id": self.sf_id,
            "record_id": self.record_id,
            "grants": list(self.grants),
            "revokes": list(self.revokes),
        }
        if self.field_rules is not None:
            out["field_rules"] = dict(self.field_rules)
        return out


@dataclass(frozen=True)
class Plan:
    entra_id: str
    upn: str
    sf_user_id: str | None
    action: PlanAction
    reason: str
    changes: tuple[Change, ...] = ()
    reviews: tuple[ReviewItem, ...] = ()
    unmanaged: tuple[str, ...] = ()  # entitlement keys the user holds that idsync did not grant
    waiting_for_manager: str | None = None  # Entra id of a manager not provisioned yet: re-plan once linked
    granted_after: frozenset[str] = field(default_factory=frozenset)  # `granted` once every change succeeded
    in_scope: bool = False  # the mapping covers this (enabled) user: only then may a user idsync revoked come back

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def user_record(self) -> dict[str, Any] | None:
        """The User fields to write in one call: the whole record for a create, the changed fields (ProfileId and
        UserRoleId included) for an update; None when the User itself does not change."""
        record: dict[str, Any] = {}
        for change in self.changes:
            if change.kind is ChangeKind.CREATE_USER:
                return dict(change.after)
            if change.kind is ChangeKind.UPDATE_FIELD:
                record[change.target] = change.after
            elif change.kind is ChangeKind.SET_PROFILE:
                record["ProfileId"] = change.sf_id
            elif change.kind is ChangeKind.SET_ROLE:
                record["UserRoleId"] = change.sf_id
        return record or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "entra_id": self.entra_id,
            "upn": self.upn,
            "sf_user_id": self.sf_user_id,
            "action": self.action.value,
            "reason": self.reason,
            "changes": [c.to_dict() for c in self.changes],
            "reviews": [r.to_dict() for r in self.reviews],
            "unmanaged": list(self.unmanaged),
            "waiting_for_manager": self.waiting_for_manager,
            "granted_after": sorted(self.granted_after),
        }

    def to_json(self) -> str:
        """Stable: same plan, same text (audit records and `--json` output compare byte for byte)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)

    def render(self, console: Console) -> None:
        from shared.engine.plan_view import render_plan

        render_plan(self, console)


def plan(
    entra_user: EntraUser,
    mapping: Mapping,
    state: SalesforceUserState,
    catalog: Catalog,
    match: MatchOutcome | None = None,
) -> Plan:
    """The plan for one user. `state` describes the linked (or matched) Salesforce user, or has `user=None` when
    there is none; `match` is the outcome of `match_user` when the user was just looked up (None: `state.user`, if
    any, is the user idsync linked earlier)."""
    desired = desired_user(entra_user, mapping, catalog, state.manager_sf_id)

    if match is not None and match.kind == "review":
        reviews = (match.review,) if match.review is not None else ()
        reason = match.review.message if match.review is not None else "matching needs a person"
        return Plan(entra_user.id, entra_user.upn, None, PlanAction.REVIEW, reason, reviews=reviews,
                    granted_after=state.granted, in_scope=desired.in_scope)
    if match is not None and match.kind == "create" and state.user is not None:
        raise ValueError("match says create, but the state holds a Salesforce user")
    if match is not None and match.kind == "link" and state.sf_user_id != match.sf_user_id:
        raise ValueError("match links a Salesforce user the state does not describe")

    user = state.user
    if user is None:
        if not desired.in_scope:
            return Plan(entra_user.id, entra_user.upn, sf_user_id=None, action=PlanAction.IGNORE, reason=desired.reason,
                        granted_after=state.granted)
        return _create(entra_user, mapping, catalog, desired, state)

    sf_user_id = state.sf_user_id
    link_change: list[Change] = []
    if match is not None and match.kind == "link" and match.rule != STORED_LINK:
        at = f" ({match.where})" if match.where else ""
        link_change.append(Change(ChangeKind.LINK, entra_user.upn, None, sf_user_id,
                                  f"matching rule '{match.rule}'{at}", sf_id=sf_user_id))

    if not desired.in_scope:
        own_evidence = match is None or match.by_stored_link or (
            mapping.link_field is not None and user.get(mapping.link_field) == entra_user.id)
        leaver = entra_user.deleted is not None or not entra_user.enabled
        if not (own_evidence or leaver):
            return Plan(entra_user.id, entra_user.upn, sf_user_id=sf_user_id, action=PlanAction.IGNORE,
                        reason=f"{desired.reason}; Salesforce user {sf_user_id} was never linked by idsync: left "
                               "alone", granted_after=state.granted)
        if user.get("IsActive") is False:
            return Plan(entra_user.id, entra_user.upn, sf_user_id=sf_user_id, action=PlanAction.NOOP,
                        reason=f"{desired.reason}; already inactive in Salesforce", granted_after=state.granted)
        change = Change(ChangeKind.DEPROVISION, entra_user.upn, "active", "frozen and deactivated", desired.reason,
                        sf_id=sf_user_id)
        return Plan(entra_user.id, entra_user.upn, sf_user_id, PlanAction.DEPROVISION, desired.reason,
                    changes=(*link_change, change), granted_after=state.granted)

    return _update(entra_user, mapping, catalog, desired, state, link_change)


# ------------------------------------------------------------------------------------------------ create


def _create(entra_user: EntraUser, mapping: Mapping, catalog: Catalog, desired: DesiredUser,
            state: SalesforceUserState) -> Plan:
    reviews = list(desired.reviews)
    user_fields = catalog.user_fields
    record: dict[str, Any] = {}
    rules: dict[str, str] = {}
    for name, wanted in desired.fields.items():
        meta = user_fields.get(name) if user_fields else None
        if wanted.value is not None and (meta is None or meta.createable):
            record[name] = wanted.value
            rules[name] = wanted.rule
    grants: tuple[str, ...] = ()
    if desired.profile is not None:
        record["ProfileId"] = desired.profile.sf_id
        rules["ProfileId"] = f"profile {desired.profile.name}: {desired.profile.rule}"
    if desired.role is not None:
        record["UserRoleId"] = desired.role.sf_id
        rules["UserRoleId"] = f"role {desired.role.name}: {desired.role.rule}"
        grants = ("role",)

    for name in (*REQUIRED_ON_CREATE, *sorted(catalog.required - _REQUIRED)):
        if record.get(name) not in (None, ""):
            continue
        if name == "ProfileId":
            if not desired.profile_wanted:  # an unknown profile is already a review item
                reviews.append(_review(entra_user, ReviewCode.NO_PROFILE, "ProfileId", "no group rule gives this "
                                       "user a profile, so they cannot be created",
                                       mapping.compiled.group_rules_where))
            continue
        wanted_field = desired.fields.get(name)
        if wanted_field is None and any(r.target == name for r in reviews):
            continue  # already reported (e.g. not in the picklist)
        where = wanted_field.where if wanted_field is not None else None
        how = "it maps to an empty value" if wanted_field is not None else f"no attribute maps it (add attributes." \
                                                                            f"{name})"
        reviews.append(_review(entra_user, ReviewCode.REQUIRED_FIELD_MISSING, name,
                               f"{name} is required to create the user and {how}", where))

    missing = any(r.code in (ReviewCode.REQUIRED_FIELD_MISSING, ReviewCode.NO_PROFILE) for r in reviews) or (
        desired.profile is None)
    if missing:
        return Plan(entra_user.id, entra_user.upn, None, PlanAction.REVIEW,
                    f"{desired.reason}; not created: required values are missing", reviews=tuple(reviews),
                    waiting_for_manager=desired.waiting_for_manager, granted_after=state.granted, in_scope=True)

    changes = [Change(ChangeKind.CREATE_USER, entra_user.upn, None, record, desired.reason, grants=grants,
                      field_rules=rules)]
    granted = set(state.granted) | set(grants)
    for kind in ENTITLEMENT_KINDS:
        for grant in desired.entitlements.get(kind, {}).values():
            changes.append(Change(_ADD[kind], grant.name, None, grant.name, grant.rule, sf_id=grant.sf_id,
                                  grants=(grant.key,)))
            granted.add(grant.key)
    return Plan(entra_user.id, entra_user.upn, None, PlanAction.CREATE, desired.reason, changes=tuple(changes),
                reviews=tuple(reviews), waiting_for_manager=desired.waiting_for_manager,
                granted_after=frozenset(granted), in_scope=True)


# ------------------------------------------------------------------------------------------------ update


def _same(name: str, current: Any, wanted: Any) -> bool:
    if current in (None, "") and wanted in (None, ""):
        return True
    if name in _CASE_INSENSITIVE and isinstance(current, str) and isinstance(wanted, str):
        return current.casefold() == wanted.casefold()
    return bool(current == wanted)


def _update(entra_user: EntraUser, mapping: Mapping, catalog: Catalog, desired: DesiredUser,
            state: SalesforceUserState, link_change: list[Change]) -> Plan:
    user: AbcMapping[str, Any] = state.user or {}
    reviews = list(desired.reviews)
    changes: list[Change] = list(link_change)
    granted = set(state.granted)
    user_fields = catalog.user_fields
    required = _REQUIRED | catalog.required

    # --- the User: fields, profile, role
    candidates = {c.casefold() for c in desired.username_candidates}
    for name, wanted in desired.fields.items():
        if wanted.create_only:
            continue
        meta = user_fields.get(name) if user_fields else None
        if meta is not None and not meta.updateable:
            continue
        current = user.get(name)
        if name == "Username" and isinstance(current, str) and current.casefold() in candidates:
            continue  # a duplicate-suffix username chosen at creation stays
        if _same(name, current, wanted.value):
            continue
        if wanted.value in (None, "") and (name in required or (meta is not None and not meta.nillable)):
            reviews.append(_review(entra_user, ReviewCode.REQUIRED_FIELD_MISSING, name,
                                   f"{name} maps to an empty value but Salesforce requires one; kept {current!r}",
                                   wanted.where))
            continue
        changes.append(Change(ChangeKind.UPDATE_FIELD, name, current, wanted.value, wanted.rule))

    profile = desired.profile
    current_profile = user.get("ProfileId")
    if profile is not None and current_profile != profile.sf_id:
        before = catalog.profile_names.get(str(current_profile), current_profile)
        changes.append(Change(ChangeKind.SET_PROFILE, "ProfileId", before, profile.name, profile.rule,
                              sf_id=profile.sf_id))

    role = desired.role
    current_role = user.get("UserRoleId") or None
    role_before = catalog.role_names.get(str(current_role), current_role) if current_role else None
    if role is not None:
        if current_role != role.sf_id:
            changes.append(Change(ChangeKind.SET_ROLE, "UserRoleId", role_before, role.name, role.rule,
                                  sf_id=role.sf_id, grants=("role",)))
            granted.add("role")
    elif not desired.role_wanted and "role" in granted:
        if current_role:
            changes.append(Change(ChangeKind.SET_ROLE, "UserRoleId", role_before, None,
                                  "no group rule gives a role any more, and idsync had set it", revokes=("role",)))
        granted.discard("role")

    # --- entitlements
    held = _held(state, catalog)  # key -> (kind, sf_id, record_id)
    wanted_keys: dict[str, Grant] = {}
    for kind in ENTITLEMENT_KINDS:
        for grant in desired.entitlements.get(kind, {}).values():
            wanted_keys[grant.key] = grant
    held_ids = {(kind, sf_id) for kind, sf_id, _record in held.values()}

    for grant in wanted_keys.values():
        if (grant.kind, grant.sf_id) not in held_ids:
            changes.append(Change(_ADD[grant.kind], grant.name, None, grant.name, grant.rule, sf_id=grant.sf_id,
                                  grants=(grant.key,)))
            granted.add(grant.key)

    wanted_ids = {(g.kind, g.sf_id) for g in wanted_keys.values()}
    removals: dict[str, list[Change]] = {kind: [] for kind in _REMOVAL_ORDER}
    unmanaged: list[str] = []
    removed_ps: set[str] = set()
    for key, (kind, sf_id, record_id) in held.items():
        if key not in state.granted:
            unmanaged.append(key)
            continue
        if (kind, sf_id) in wanted_ids or kind == "psl":
            continue  # licences are decided below, once the permission sets staying are known
        name = key.partition(":")[2]
        removals[kind].append(Change(_REMOVE[kind], name, name, None, "granted by idsync, no longer given by any "
                                     "group rule", sf_id=sf_id, record_id=record_id, revokes=(key,)))
        granted.discard(key)
        if kind == "ps":
            removed_ps.add(sf_id)
    still_needed = _licences_needed(state, catalog, removed_ps)
    for key, (kind, sf_id, record_id) in held.items():
        if kind != "psl" or key not in state.granted or (kind, sf_id) in wanted_ids or sf_id in still_needed:
            continue
        name = key.partition(":")[2]
        removals["psl"].append(Change(ChangeKind.REMOVE_LICENCE, name, name, None, "granted by idsync, no longer "
                                      "needed by any mapped permission set", sf_id=sf_id, record_id=record_id,
                                      revokes=(key,)))
        granted.discard(key)
    for kind in _REMOVAL_ORDER:
        changes.extend(sorted(removals[kind], key=lambda c: c.target))
    # keys idsync granted that the user no longer holds and nobody wants: forget them
    granted -= {k for k in state.granted if k.partition(":")[1] and k not in held and k not in wanted_keys}

    action = PlanAction.UPDATE if changes else PlanAction.NOOP
    return Plan(entra_user.id, entra_user.upn, state.sf_user_id, action, desired.reason, changes=tuple(changes),
                reviews=tuple(reviews), unmanaged=tuple(sorted(unmanaged)),
                waiting_for_manager=desired.waiting_for_manager, granted_after=frozenset(granted), in_scope=True)


def _held(state: SalesforceUserState, catalog: Catalog) -> dict[str, tuple[str, str, str]]:
    """What the user holds, by entitlement key: key -> (kind, Salesforce id, assignment or membership id). Ids the
    catalogue does not know are keyed by id (`ps:0PS...`) so they can still be listed as unmanaged."""
    held: dict[str, tuple[str, str, str]] = {}
    for sf_id, record in state.licences.items():
        held[entitlement_key("psl", catalog.permission_set_licenses.get(sf_id, sf_id))] = ("psl", sf_id, record)
    for sf_id, record in state.permission_sets.items():
        held[entitlement_key("ps", catalog.permission_set_names.get(sf_id, sf_id))] = ("ps", sf_id, record)
    for sf_id, record in state.permission_set_groups.items():
        held[entitlement_key("psg", catalog.permission_set_group_names.get(sf_id, sf_id))] = ("psg", sf_id, record)
    for sf_id, record in state.groups.items():
        key = catalog.group_keys.get(sf_id, entitlement_key("group", sf_id))
        held[key] = (key.partition(":")[0], sf_id, record)
    return held


def _licences_needed(state: SalesforceUserState, catalog: Catalog, removed_ps: set[str]) -> set[str]:
    """Licences that permission sets staying on the user (idsync's or anyone's) still need: never removed."""
    needed: set[str] = set()
    for ps_id in state.permission_sets:
        licence_id = catalog.permission_set_licence_of.get(ps_id)
        if licence_id and ps_id not in removed_ps:
            needed.add(licence_id)
    return needed


def _review(entra_user: EntraUser, code: ReviewCode, target: str, message: str, where: str | None) -> ReviewItem:
    at = f" ({where})" if where else ""
    return ReviewItem(code, entra_user.id, entra_user.upn, target, f"{entra_user.upn}: {message}{at}", where)
