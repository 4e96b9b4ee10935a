"""Reading one user for the CRM sections: the properties the mapping names, the manager chain to the configured
depth, transitive groups when a relationship rule needs them, and what is left of a deleted user.

Why the chain one GET per level with `$expand=manager`: each read returns the next manager with the properties the
mapping shows (`manager.displayName`, `manager.mail`), so depth d costs d requests; Graph's `$levels` on manager
needs an advanced (eventually consistent) query, and a just-renamed manager must show their new name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.errors import NotFound
from shared.mapping.enrichment import COMPUTED_ROOTS, MANAGER
from shared.mapping.model import AttributeSpec, Mapping
from shared.mapping.transforms import Template, parse_path

#: Read for every user: identity, guest state and what Contacts are built from by default.
BASE_USER = ("id", "userPrincipalName", "accountEnabled", "userType", "displayName", "givenName", "surname", "mail",
             "otherMails", "externalUserState", "companyName")
#: Read for every manager in the chain.
BASE_MANAGER = ("id", "displayName", "mail", "userPrincipalName")
MAX_PAGE = 999


def _paths(specs: Iterable[AttributeSpec]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for spec in specs:
        if spec.source:
            out.append(parse_path(spec.source))
        for text in (spec.template, spec.default):
            if text:
                out.extend(Template(text).paths)
    return out


def crm_properties(mapping: Mapping) -> tuple[list[str], list[str]]:
    """The `$select` lists for the user and for each manager: every Graph property the CRM sections name."""
    specs: list[AttributeSpec] = []
    templates: list[str] = []
    manager_templates: list[str] = []
    if mapping.guests is not None:
        specs += [*mapping.guests.contact.values(), *mapping.guests.accounts.fields.values()]
        templates.append(mapping.guests.accounts.name)
    if mapping.enrichment is not None:
        specs += [*mapping.enrichment.contact.values(), *mapping.enrichment.account.values()]
        manager_templates.append(mapping.enrichment.manager_chain.format)
    paths = _paths(specs) + [p for t in templates for p in Template(t).paths]
    user = dict.fromkeys(BASE_USER)
    manager = dict.fromkeys(BASE_MANAGER)
    for path in paths:
        if path[0] == MANAGER and len(path) > 1:
            manager[path[1]] = None
        elif path[0] not in COMPUTED_ROOTS:
            user[path[0]] = None
    for text in manager_templates:
        manager.update(dict.fromkeys(p[0] for p in Template(text).paths))
    return list(user), list(manager)


def needs_groups(mapping: Mapping) -> bool:
    spec = mapping.guests.relationship if mapping.guests else None
    return bool(spec and any(rule.group for rule in spec.rules))


@dataclass(frozen=True)
class UserRead:
    """`user` None: not in the directory (then `deleted` tells whether it is in the recycle bin)."""

    user: dict[str, Any] | None
    chain: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    deleted_upn: str | None = None
    deleted_type: str | None = None


def _get(graph: Any, user_id: str, select: list[str], manager_select: list[str] | None) -> dict[str, Any] | None:
    params = {"$select": ",".join(select)}
    if manager_select:
        params["$expand"] = f"manager($select={','.join(manager_select)})"
    try:
        body: dict[str, Any] = graph.request("GET", f"users/{quote(user_id, safe='')}", params=params).json()
        return body
    except NotFound:
        return None


def read_user(graph: Any, entra_id: str, mapping: Mapping) -> UserRead:
    user_select, manager_select = crm_properties(mapping)
    depth = mapping.enrichment.manager_chain.depth if mapping.enrichment is not None else 1
    user = _get(graph, entra_id, user_select, manager_select)
    if user is None:
        gone = graph.get_deleted_user(entra_id)
        if gone is None:
            return UserRead(None, [], [])
        upn = str(gone.get("userPrincipalName") or "")
        prefix = entra_id.replace("-", "")
        return UserRead(None, [], [], upn[len(prefix):] if upn.startswith(prefix) else upn,
                        str(gone.get("userType") or "") or None)
    chain: list[dict[str, Any]] = []
    seen = {entra_id}
    nxt = user.pop("manager", None)
    while isinstance(nxt, dict) and nxt.get("id") and nxt["id"] not in seen and len(chain) < depth:
        seen.add(str(nxt["id"]))
        if len(chain) + 1 < depth:  # one more level wanted: read this manager with theirs expanded
            full = _get(graph, str(nxt["id"]), manager_select, manager_select)
            if full is None:
                chain.append(nxt)
                break
            following = full.pop("manager", None)
            chain.append(full)
            nxt = following
        else:
            chain.append(nxt)
            break
    groups = transitive_groups(graph, entra_id) if needs_groups(mapping) else []
    return UserRead(user, chain, groups)


def transitive_groups(graph: Any, entra_id: str) -> list[dict[str, Any]]:
    """id and displayName of every group the user is in, through nesting (all pages)."""
    out: list[dict[str, Any]] = []
    url: str | None = f"users/{quote(entra_id, safe='')}/transitiveMemberOf"
    params: dict[str, Any] | None = {"$select": "id,displayName", "$top": str(MAX_PAGE)}
    while url:
        page = graph.request("GET", url, params=params).json()
        params = None
        out.extend(g for g in page.get("value", []) if isinstance(g, dict)
                   and str(g.get("@odata.type", "#microsoft.graph.group")).endswith(".group"))
        url = page.get("@odata.nextLink")
    return out
