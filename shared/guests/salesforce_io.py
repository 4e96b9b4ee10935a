"""The Salesforce side of guests and enrichment: field metadata, Accounts by reference or domain, Contact
candidates, and writing plans. Every call goes through `SalesforceClient` (limiter, errors, one token refresh).

Why per-record results and not exceptions for writes: a validation rule an admin added on Contact refuses one
record for a reason only a person can fix; that becomes a review item naming the rule's message, while a
throttled or unavailable Salesforce raises and the task retries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from typing import Any, Protocol

from simple_salesforce.format import format_soql

from shared.engine.catalog import FieldMeta
from shared.guests.fields import metas_from_describe
from shared.guests.plan import WEBSITE, ContactPlan, account_has_domain, website_host
from shared.mapping.guests import looks_like_record_id

#: Field metadata changes when an admin deploys a field; a few minutes of staleness is harmless (a new field is
#: written a little later, a removed one fails one record and shows up as a problem).
DESCRIBE_TTL_S = 300.0
_describes: dict[tuple[int, str], tuple[float, dict[str, FieldMeta]]] = {}


class SalesforceApi(Protocol):
    def query_all(self, soql: str) -> list[dict[str, Any]]: ...

    def describe(self, sobject: str) -> dict[str, Any]: ...

    def create_records(self, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]: ...

    def collections_update(self, records: list[dict[str, Any]], all_or_none: bool = False
                           ) -> list[dict[str, Any]]: ...

    def collections_upsert(self, sobject: str, external_id_field: str, records: list[dict[str, Any]],
                           all_or_none: bool = False) -> list[dict[str, Any]]: ...


def field_metas(sf: SalesforceApi, sobject: str) -> dict[str, FieldMeta]:
    key = (id(sf), sobject)
    cached = _describes.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < DESCRIBE_TTL_S:
        return cached[1]
    metas = metas_from_describe(sf.describe(sobject))
    _describes[key] = (now, metas)
    return metas


@dataclass(frozen=True)
class WriteResult:
    """One record's outcome: its id, or Salesforce's error (code, message, fields)."""

    record_id: str | None
    code: str | None = None
    message: str | None = None
    fields: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is None

    @classmethod
    def from_result(cls, result: AbcMapping[str, Any], record_id: str | None = None) -> WriteResult:
        if result.get("success"):
            return cls(str(result.get("id") or record_id or ""))
        errors = result.get("errors") or [{}]
        first = errors[0] if isinstance(errors, list) and errors else {}
        return cls(record_id, str(first.get("statusCode") or "UNKNOWN"), str(first.get("message") or "refused"),
                   tuple(str(f) for f in first.get("fields") or ()))

    def describe(self) -> str:
        fields = f" [{', '.join(self.fields)}]" if self.fields else ""
        return f"{self.code}: {self.message}{fields}"


def _select(metas: AbcMapping[str, FieldMeta], wanted: list[str]) -> str:
    names = dict.fromkeys(["Id", *[w for w in wanted if not metas or w in metas]])
    return ", ".join(names)


# ------------------------------------------------------------------------------------------------------ Accounts


def account_by_reference(sf: SalesforceApi, reference: str, fields: list[str]) -> tuple[dict[str, Any] | None,
                                                                                       str | None]:
    """The Account a mapping names by Id or by Name: (record, None), or (None, why not)."""
    metas = field_metas(sf, "Account")
    select = _select(metas, ["Name", *fields])
    if looks_like_record_id(reference):
        rows = sf.query_all(format_soql(f"SELECT {select} FROM Account WHERE Id = {{}}", reference))
    else:
        rows = sf.query_all(format_soql(f"SELECT {select} FROM Account WHERE Name = {{}}", reference))
    if len(rows) == 1:
        return rows[0], None
    if not rows:
        return None, f"no Account '{reference}' in Salesforce"
    return None, f"{len(rows)} Accounts are named '{reference}': name it by Id in the mapping"


def accounts_with_domain(sf: SalesforceApi, field_name: str, domain: str, fields: list[str]) -> list[dict[str, Any]]:
    """Accounts whose `field_name` carries `domain`: equality for a domain field; for Website a LIKE narrows the
    rows and the host comparison decides (https://www.x.com/ and x.com are the same company)."""
    metas = field_metas(sf, "Account")
    select = _select(metas, ["Name", field_name, *fields])
    if field_name == WEBSITE:
        rows = sf.query_all(format_soql(f"SELECT {select} FROM Account WHERE Website LIKE {{}}", f"%{domain}%"))
        return [r for r in rows if website_host(str(r.get(WEBSITE) or "")) == domain]
    rows = sf.query_all(format_soql(f"SELECT {select} FROM Account WHERE {field_name} = {{}}", domain))
    return [r for r in rows if account_has_domain(r, field_name, domain)]


def create_account(sf: SalesforceApi, values: dict[str, Any], key_field: str | None) -> WriteResult:
    """By upsert on `key_field` when there is one (a second creator gets the first one's Account), else an insert."""
    if key_field:
        results = sf.collections_upsert("Account", key_field, [values])
    else:
        results = sf.create_records([{"attributes": {"type": "Account"}, **values}])
    return WriteResult.from_result(results[0] if results else {})


# ------------------------------------------------------------------------------------------------------ Contacts


def contact_candidates(sf: SalesforceApi, *, stored_id: str | None, link_field: str | None, entra_id: str,
                       email: str | None, fields: list[str]) -> list[dict[str, Any]]:
    """Every Contact the matching rules could pick, in ONE query: by Id (stored link), link field, Email."""
    metas = field_metas(sf, "Contact")
    clauses: list[str] = []
    values: list[Any] = []
    if stored_id:
        clauses.append("Id = {}")
        values.append(stored_id)
    if link_field and (not metas or link_field in metas):
        clauses.append(f"{link_field} = {{}}")
        values.append(entra_id)
    if email:
        clauses.append("Email = {}")
        values.append(email)
    if not clauses:
        return []
    extra = [f for f in ("AccountId", "Email", "LastName", *([link_field] if link_field else []), *fields)]
    select = _select(metas, extra)
    return sf.query_all(format_soql(f"SELECT {select} FROM Contact WHERE {' OR '.join(clauses)}", *values))


def contact_by_id(sf: SalesforceApi, contact_id: str, fields: list[str]) -> dict[str, Any] | None:
    metas = field_metas(sf, "Contact")
    rows = sf.query_all(format_soql(f"SELECT {_select(metas, ['AccountId', *fields])} FROM Contact WHERE Id = {{}}",
                                    contact_id))
    return rows[0] if rows else None


def apply_plan(sf: SalesforceApi, sobject: str, plan: ContactPlan) -> WriteResult | None:
    """Create or update one record as planned; None when there was nothing to write."""
    if plan.action == "create":
        results = sf.create_records([{"attributes": {"type": sobject}, **plan.fields}])
        return WriteResult.from_result(results[0] if results else {})
    if plan.action == "update" and plan.contact_id:
        results = sf.collections_update([{"attributes": {"type": sobject}, "id": plan.contact_id, **plan.fields}])
        return WriteResult.from_result(results[0] if results else {}, plan.contact_id)
    return None
