"""What one user should have in Salesforce, from Entra and the mapping alone: fields, profile, role, entitlements.

Why separate from the diff (`plan`): matching compares the desired values of a few fields before any Salesforce
state is known, and `sync-user` shows the desired state next to the plan. Each value and entitlement carries the
rule that produced it (with its mapping line), because every change in a plan must say why.

Names are resolved to ids through the `Catalog` here; an unknown name or a value Salesforce would refuse (too long
without `truncate`, not in a restricted picklist) becomes a review item and is left out, so the rest still applies.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from shared.engine.catalog import Catalog, FieldMeta
from shared.engine.entra import EntraUser
from shared.engine.naming import alias_for, nickname_for
from shared.engine.reviews import ReviewCode, ReviewItem
from shared.engine.salesforce_state import entitlement_key
from shared.mapping.compiled import CompiledGroupRule
from shared.mapping.model import Mapping, OnEmpty

#: Entitlement kinds in the order they are applied (a licence before the permission sets needing it).
ENTITLEMENT_KINDS = ("psl", "ps", "psg", "group", "queue")

_RULE_LISTS = {
    "psl": "permission_set_licenses",
    "ps": "permission_sets",
    "psg": "permission_set_groups",
    "group": "public_groups",
    "queue": "queues",
}
_UNKNOWN = {
    "profile": (ReviewCode.UNKNOWN_PROFILE, "profile"),
    "role": (ReviewCode.UNKNOWN_ROLE, "role"),
    "psl": (ReviewCode.UNKNOWN_PERMISSION_SET_LICENSE, "permission set licence"),
    "ps": (ReviewCode.UNKNOWN_PERMISSION_SET, "permission set"),
    "psg": (ReviewCode.UNKNOWN_PERMISSION_SET_GROUP, "permission set group"),
    "group": (ReviewCode.UNKNOWN_PUBLIC_GROUP, "public group"),
    "queue": (ReviewCode.UNKNOWN_QUEUE, "queue"),
}
_LOCALE_FIELDS = ("TimeZoneSidKey", "LocaleSidKey", "EmailEncodingKey", "LanguageLocaleKey")


@dataclass(frozen=True, slots=True)
class DesiredField:
    value: Any  # None: the field should be empty
    rule: str
    where: str | None = None
    create_only: bool = False  # set when the user is created, never updated afterwards


@dataclass(frozen=True, slots=True)
class Grant:
    kind: str  # profile, role, psl, ps, psg, group, queue
    name: str
    sf_id: str
    rule: str
    key: str = field(init=False)  # the entitlement key in `granted`: "role", "ps:Sales_Cloud_User", ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.kind if self.kind in ("role", "profile") else
                           entitlement_key(self.kind, self.name))


@dataclass(frozen=True)
class DesiredUser:
    entra_id: str
    upn: str
    in_scope: bool
    reason: str  # why in or out of scope, with the mapping line
    fields: dict[str, DesiredField] = field(default_factory=dict)
    username_candidates: tuple[str, ...] = ()
    profile: Grant | None = None
    profile_wanted: bool = False  # some rule sets a profile (even an unknown one)
    role: Grant | None = None
    role_wanted: bool = False  # some rule sets a role (even an unknown one): never clear the role then
    entitlements: dict[str, dict[str, Grant]] = field(default_factory=dict)  # kind -> name -> grant
    waiting_for_manager: str | None = None
    reviews: tuple[ReviewItem, ...] = ()


def desired_user(
    entra_user: EntraUser, mapping: Mapping, catalog: Catalog, manager_sf_id: str | None = None
) -> DesiredUser:
    """The desired Salesforce state of `entra_user`; out of scope (or disabled, or deleted) gives `in_scope=False`
    and nothing else. `manager_sf_id` is the Salesforce id of the user's Entra manager, None if not provisioned."""
    compiled = mapping.compiled
    if entra_user.deleted:
        return DesiredUser(entra_user.id, entra_user.upn, False, f"not in scope: {entra_user.deleted}-deleted in Entra")
    if not entra_user.enabled:
        return DesiredUser(entra_user.id, entra_user.upn, False, "not in scope: disabled in Entra (accountEnabled "
                                                                "false)")
    in_scope, reason = compiled.in_scope(entra_user.user_type, entra_user.group_keys, entra_user.attrs)
    if not in_scope:
        return DesiredUser(entra_user.id, entra_user.upn, False, reason)

    build = _Builder(entra_user, mapping, catalog)
    attrs = entra_user.attrs
    for attribute in compiled.attributes:
        value = attribute.value(attrs)
        if value is None and attribute.on_empty is OnEmpty.KEEP:
            continue
        build.put(attribute.field, value, attribute.rule, attribute.where, truncate=attribute.truncate)

    candidates = tuple(compiled.username_candidates(attrs))
    if candidates:
        build.put("Username", candidates[0], compiled.username_rule, compiled.username_where, truncate=False)
    if mapping.link_field:
        build.put(mapping.link_field, entra_user.id, compiled.link_rule, compiled.link_where, truncate=False)

    waiting: str | None = None
    if mapping.manager is not None:
        where = compiled.manager_where
        if entra_user.manager_id is None:
            if mapping.manager.on_empty is OnEmpty.CLEAR:
                build.put(mapping.manager.field, None, f"{compiled.manager_rule}: no manager in Entra", where)
        elif manager_sf_id:
            build.put(mapping.manager.field, manager_sf_id, compiled.manager_rule, where)
        else:
            waiting = entra_user.manager_id

    # generated on create unless the mapping sets them itself
    if "Alias" not in build.fields:
        build.put("Alias", alias_for(entra_user), "generated from the name and the Entra object id", None,
                  truncate=False, create_only=True)
    if "CommunityNickname" not in build.fields:
        build.put("CommunityNickname", nickname_for(entra_user), "generated from the mail nickname and the Entra "
                  "object id", None, truncate=False, create_only=True)
    choice = compiled.locale_for(attrs)
    locale_rule = f"{compiled.locale_rule}: {choice.origin}"
    for name, value in zip(_LOCALE_FIELDS, (choice.time_zone, choice.locale, choice.email_encoding, choice.language),
                           strict=True):
        if name not in build.fields:
            build.put(name, value, locale_rule, compiled.locale_where, truncate=False,
                      create_only=not compiled.locale_always)

    matching_rules = [r for r in compiled.group_rules if r.key in entra_user.group_keys]
    profile, profile_wanted = build.choose("profile", matching_rules, catalog.profiles)
    role, role_wanted = build.choose("role", matching_rules, catalog.roles)
    entitlements = build.entitlements(matching_rules)
    return DesiredUser(
        entra_id=entra_user.id,
        upn=entra_user.upn,
        in_scope=True,
        reason=reason,
        fields=build.fields,
        username_candidates=candidates,
        profile=profile,
        profile_wanted=profile_wanted,
        role=role,
        role_wanted=role_wanted,
        entitlements=entitlements,
        waiting_for_manager=waiting,
        reviews=tuple(build.reviews),
    )


class _Builder:
    """Collects fields and review items for one user; knows how to fit a value into a Salesforce field."""

    def __init__(self, entra_user: EntraUser, mapping: Mapping, catalog: Catalog) -> None:
        self.user = entra_user
        self.mapping = mapping
        self.catalog = catalog
        self.fields: dict[str, DesiredField] = {}
        self.reviews: list[ReviewItem] = []

    def review(self, code: ReviewCode, target: str, message: str, where: str | None) -> None:
        at = f" ({where})" if where else ""
        self.reviews.append(ReviewItem(code, self.user.id, self.user.upn, target,
                                       f"{self.user.upn}: {message}{at}", where))

    def put(self, name: str, value: Any, rule: str, where: str | None, *, truncate: bool = True,
            create_only: bool = False) -> None:
        user_fields = self.catalog.user_fields
        meta: FieldMeta | None = user_fields.get(name) if user_fields else None
        if user_fields and meta is None:
            self.review(ReviewCode.UNKNOWN_FIELD, name, f"the org's User object has no field {name}", where)
            return
        if meta is not None and isinstance(value, str):
            if meta.length and len(value) > meta.length:
                if not truncate:
                    self.review(ReviewCode.VALUE_TOO_LONG, name, f"{name} value has {len(value)} characters, the "
                                f"field holds {meta.length} (truncate is off)", where)
                    return
                value = value[: meta.length]
                rule = f"{rule}, truncated to {meta.length}"
            if meta.restricted and meta.picklist_values is not None and value not in meta.picklist_values:
                self.review(ReviewCode.PICKLIST_VALUE, name, f"{name} value {value!r} is not in the field's "
                            f"restricted picklist", where)
                return
        self.fields[name] = DesiredField(value, rule, where, create_only)

    def choose(self, kind: str, rules: list[CompiledGroupRule], ids: AbcMapping[str, str]) -> tuple[Grant | None,
                                                                                                      bool]:
        """The highest-precedence matching rule setting a profile (or role) wins; the earlier rule on a tie."""
        best: CompiledGroupRule | None = None
        for rule in rules:
            if getattr(rule, kind) is not None and (best is None or rule.precedence > best.precedence):
                best = rule
        if best is None:
            return None, False
        name: str = getattr(best, kind)
        sf_id = ids.get(name)
        rule_text = f"{best.text}, precedence {best.precedence}"
        if sf_id is None:
            code, label = _UNKNOWN[kind]
            self.review(code, kind, f"{label} '{name}' does not exist in the org",
                        self.mapping.where(("group_rules", best.index, kind)))
            return None, True
        return Grant(kind, name, sf_id, rule_text), True

    def entitlements(self, rules: list[CompiledGroupRule]) -> dict[str, dict[str, Grant]]:
        catalog = self.catalog
        wanted: dict[str, dict[str, list[CompiledGroupRule]]] = {kind: {} for kind in ENTITLEMENT_KINDS}
        for rule in rules:
            for kind in ENTITLEMENT_KINDS:
                for name in getattr(rule, _RULE_LISTS[kind]):
                    wanted[kind].setdefault(name, []).append(rule)
        out: dict[str, dict[str, Grant]] = {kind: {} for kind in ENTITLEMENT_KINDS}
        for kind in ENTITLEMENT_KINDS:
            for name, by in wanted[kind].items():
                sf_id = _resolve(catalog, kind, name)
                if sf_id is None:
                    code, label = _UNKNOWN[kind]
                    first = by[0]
                    listed = self.mapping.group_rules[first.index]
                    index = getattr(listed, _RULE_LISTS[kind]).index(name)
                    self.review(code, entitlement_key(kind, name), f"{label} '{name}' does not exist in the org",
                                self.mapping.where(("group_rules", first.index, _RULE_LISTS[kind], index)))
                    continue
                out[kind][name] = Grant(kind, name, sf_id, "; ".join(r.text for r in by))
        # a permission set needing a permission set licence brings the licence along
        for ps in out["ps"].values():
            licence_id = catalog.permission_sets[ps.name].license_id
            licence = catalog.permission_set_licenses.get(licence_id) if licence_id else None
            if licence is not None and licence not in out["psl"]:
                out["psl"][licence] = Grant("psl", licence, str(licence_id),
                                            f"needed by permission set {ps.name} ({ps.rule})")
        return out


def _resolve(catalog: Catalog, kind: str, name: str) -> str | None:
    if kind == "ps":
        info = catalog.permission_sets.get(name)
        return info.id if info is not None else None
    ids: AbcMapping[str, str] = {
        "psl": catalog.licence_ids, "psg": catalog.permission_set_groups, "group": catalog.public_groups,
        "queue": catalog.queues,
    }[kind]
    return ids.get(name)


def desired_values(entra_user: EntraUser, mapping: Mapping, fields: tuple[str, ...]) -> dict[str, Any]:
    """The values the mapping gives `fields` (no catalog checks): what matching compares with Salesforce records.
    Uses the same compiled attributes as `desired_user`, so matching can never disagree with provisioning."""
    compiled = mapping.compiled
    out: dict[str, Any] = {}
    for name in fields:
        if name == "Username":
            candidates = compiled.username_candidates(entra_user.attrs)
            out[name] = candidates[0] if candidates else None
        elif name == mapping.link_field:
            out[name] = entra_user.id
        elif name in compiled.attribute_by_field:
            out[name] = compiled.attribute_by_field[name].value(entra_user.attrs)
        else:
            out[name] = None
    return out
