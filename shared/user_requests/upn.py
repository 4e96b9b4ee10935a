"""UPNs for requested users: `{first}.{last}@domain`, folded to what Entra accepts, numbered when taken.

Why fold: Entra refuses non-ASCII characters and most punctuation in the part before @, and a person named
"Zoë O'Brien-Müller" still needs `zoe.obrien-muller@contoso.com`. The candidates are deterministic, so a retry
walks the same list and finds the user an earlier attempt created (marked with the request's Id).
"""

from __future__ import annotations

import re
import unicodedata

#: Characters Entra accepts in the local part of a UPN besides letters and digits (we keep a conservative subset).
_KEEP = re.compile(r"[^a-z0-9._-]")
_DOTS = re.compile(r"[.]{2,}")
#: The local part of a UPN holds at most 64 characters.
MAX_LOCAL = 64


def fold(text: str) -> str:
    """`Zoë O'Brien Müller` -> `zoeobrienmuller` style: ASCII, lower case, spaces dropped, only . _ - kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    ascii_text = ascii_text.replace("ß", "ss").replace("æ", "ae").replace("ø", "o").replace("đ", "d")
    ascii_text = ascii_text.encode("ascii", "ignore").decode().lower().replace(" ", "")
    return _KEEP.sub("", ascii_text)


def local_part(first: str | None, last: str | None, upn_format: str) -> str:
    first_f, last_f = fold(first or ""), fold(last or "")
    text = upn_format.format(first=first_f, last=last_f, initial=first_f[:1])
    text = _DOTS.sub(".", text).strip("._-")
    return text[:MAX_LOCAL].rstrip("._-")


def upn_candidates(first: str | None, last: str | None, upn_format: str, domain: str, attempts: int) -> list[str]:
    """`jane.doe@d`, `jane.doe2@d`, `jane.doe3@d`, ... (`attempts` in all); empty when the names fold to nothing."""
    base = local_part(first, last, upn_format)
    if not base:
        return []
    out = [f"{base}@{domain}"]
    for n in range(2, attempts + 1):
        suffix = str(n)
        out.append(f"{base[: MAX_LOCAL - len(suffix)]}{suffix}@{domain}")
    return out


def mail_nickname(upn: str) -> str:
    """The mailNickname Graph requires on create: the local part, without characters Exchange refuses."""
    return re.sub(r"[^A-Za-z0-9._-]", "", upn.partition("@")[0])[:64] or "user"
