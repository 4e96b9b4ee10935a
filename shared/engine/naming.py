"""Usernames, aliases and nicknames for new Salesforce users, computed without asking Salesforce.

Why deterministic and query-free: a batch of 200 joiners must not cost 200 "is this alias taken?" queries, and a
re-planned user must get the same values as before (or every plan would rename them). A short hash of the Entra
object id makes Alias and CommunityNickname (practically) unique: CommunityNickname must be unique in the org, Alias
need not be but helps people tell users apart.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from shared.engine.entra import EntraUser
from shared.mapping.model import Mapping
from shared.mapping.transforms import read_path, strip_ext

ALIAS_LENGTH = 8  # Salesforce's limit for User.Alias
NICKNAME_LENGTH = 40  # Salesforce's limit for User.CommunityNickname
_NOT_NICK = re.compile(r"[^a-z0-9._-]+")


def username_candidates(entra_user: EntraUser, mapping: Mapping) -> list[str]:
    """Usernames to try in order: the first is the one wanted; the others (with `on_duplicate: suffix`) are what the
    executor tries when Salesforce answers DUPLICATE_USERNAME. Empty when the source attribute is empty."""
    return mapping.compiled.username_candidates(entra_user.attrs)


def _ascii(text: str | None) -> str:
    folded = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _hash(entra_id: str) -> str:
    return hashlib.sha256(entra_id.encode()).hexdigest()


def alias_for(entra_user: EntraUser) -> str:
    """First initial + up to 3 letters of the surname + hash: `jsmi3fa2` (8 characters)."""
    attrs = entra_user.attrs
    given, surname = _ascii(read_path(attrs, ("givenName",))), _ascii(read_path(attrs, ("surname",)))
    stem = (given[:1] + surname[:3]) if surname else _ascii(strip_ext(entra_user.upn).partition("@")[0])[:4]
    stem = stem[:4] or "u"
    return stem + _hash(entra_user.id)[: ALIAS_LENGTH - len(stem)]


def nickname_for(entra_user: EntraUser) -> str:
    """The mail nickname (or UPN's local part) + `.` + 8 hex characters: `jane.smith.3fa2c1d0` (at most 40)."""
    attrs = entra_user.attrs
    source = read_path(attrs, ("mailNickname",)) or entra_user.upn
    stem = _NOT_NICK.sub("", strip_ext(source).partition("@")[0].lower())[: NICKNAME_LENGTH - 9] or "user"
    return f"{stem}.{_hash(entra_user.id)[:8]}"
