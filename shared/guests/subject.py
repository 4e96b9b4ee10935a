"""One Entra user as the CRM sections see it: the Graph user plus what idsync computes for them.

Why computed roots next to the Graph properties: mapping values are attribute paths and templates read from one
dict; `guest.email` / `guest.domain` (the real address of a guest, whose UPN is `jane_contoso.com#EXT#@tenant`),
`manager.<property>` and `managerChain` are then written exactly like `department` in the mapping file.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from shared.mapping.enrichment import GUEST, MANAGER, MANAGER_CHAIN, ManagerChainSpec
from shared.mapping.transforms import Template, strip_ext

GUEST_TYPE = "guest"


def guest_address(user: AbcMapping[str, Any]) -> str | None:
    """The address a guest was invited with: `mail`, else the first of `otherMails`, else the one inside the
    `#EXT#` UPN. Lower case (mail domains and Salesforce email matching ignore case)."""
    candidates: list[Any] = [user.get("mail")]
    other = user.get("otherMails")
    if isinstance(other, list):
        candidates.extend(other)
    upn = str(user.get("userPrincipalName") or "")
    if "#ext#" in upn.lower():
        candidates.append(strip_ext(upn))
    for value in candidates:
        if isinstance(value, str) and "@" in value.strip():
            return value.strip().lower()
    return None


def mail_domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip().lower().rstrip(".") or None


@dataclass(frozen=True)
class CrmSubject:
    """What the planners read. `deleted`: gone from the tenant (soft or hard); `attrs` is empty then."""

    entra_id: str
    upn: str
    user_type: str
    enabled: bool
    deleted: bool
    attrs: AbcMapping[str, Any] = field(default_factory=dict)
    group_keys: frozenset[str] = frozenset()  # object ids and display names, case-folded (transitive groups)
    chain_ids: tuple[str, ...] = ()  # the managers read, nearest first (the reverse index is built from them)

    @property
    def is_guest(self) -> bool:
        return self.user_type.casefold() == GUEST_TYPE

    @property
    def removed(self) -> bool:
        """Deleted, or disabled: either way the person no longer works with us through this account."""
        return self.deleted or not self.enabled

    @property
    def email(self) -> str | None:
        guest = self.attrs.get(GUEST)
        return guest.get("email") if isinstance(guest, dict) else None

    @property
    def domain(self) -> str | None:
        guest = self.attrs.get(GUEST)
        return guest.get("domain") if isinstance(guest, dict) else None

    @property
    def invitation_state(self) -> str | None:
        value = self.attrs.get("externalUserState")
        return str(value) if value else None

    @classmethod
    def gone(cls, entra_id: str, upn: str = "", user_type: str = "Guest") -> CrmSubject:
        return cls(entra_id=entra_id, upn=upn, user_type=user_type, enabled=False, deleted=True)


def build_subject(
    user: AbcMapping[str, Any],
    chain: Iterable[AbcMapping[str, Any]] = (),
    groups: Iterable[AbcMapping[str, Any]] = (),
    chain_spec: ManagerChainSpec | None = None,
) -> CrmSubject:
    """From Graph JSON: the user, their managers nearest first (as many as were read), their transitive groups."""
    managers = [dict(m) for m in chain]
    spec = chain_spec or ManagerChainSpec()
    fmt = Template(spec.format)
    names = [name for name in (fmt.render(m) for m in managers[: spec.depth]) if name]
    email = guest_address(user)
    attrs = dict(user)
    attrs[GUEST] = {"email": email, "domain": mail_domain(email)}
    attrs[MANAGER] = managers[0] if managers else None
    attrs[MANAGER_CHAIN] = spec.separator.join(names) or None
    keys = {str(part).casefold() for g in groups for part in (g.get("id"), g.get("displayName")) if part}
    return CrmSubject(
        entra_id=str(user["id"]),
        upn=str(user.get("userPrincipalName") or ""),
        user_type=str(user.get("userType") or "Member"),
        enabled=user.get("accountEnabled") is not False,
        deleted=False,
        attrs=attrs,
        group_keys=frozenset(keys),
        chain_ids=tuple(str(m["id"]) for m in managers[: spec.depth] if m.get("id")),
    )
