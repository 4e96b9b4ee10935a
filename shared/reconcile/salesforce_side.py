"""Every Salesforce user and their entitlements, read in pages and held compactly for a whole-org join.

Why the whole org is held while Entra streams: an Entra user's Salesforce record can be anywhere in the User table
(linked by id, or found by a matching rule on any of several fields), so the join needs every User row at hand;
asking Salesforce per chunk of 200 instead would cost one more call per chunk (500 at 100,000 users). What is held
is kept small: one tuple of values per user over a shared field list (a `RowView` gives the engine the mapping it
expects), repeated values (profile, role, locale ids) interned, the API's per-record `attributes` dropped; raw pages
are let go as soon as they are folded in. The engine's `CandidateIndex` indexes the rows once for `match_user`.

Entitlements are read the same way, three queries for the whole org: permission set (and group) assignments minus
the profile-owned ones (every user has one; no entitlement), licence assignments, and memberships of public groups
and queues.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from shared.engine import CandidateIndex, user_fields_to_read
from shared.logging import get_logger
from shared.mapping import Mapping as IdsyncMapping
from shared.provisioning.state_reader import Entitlements
from shared.salesforce_bulk_query import BulkQuery, BulkQueryUnavailable

#: Read besides what the engine needs: who last changed the record, and when (a direct Salesforce edit is a change
#: whose record was last modified by someone other than idsync's own user).
AUDIT_FIELDS = ("LastModifiedById", "LastModifiedDate")
#: Values unique per user are not interned (interning them would only grow the interpreter's table).
_UNIQUE = frozenset({"Id", "Username", "Email", "FederationIdentifier", "CommunityNickname", "Alias", "EmployeeNumber",
                     "MobilePhone", "Phone", "LastModifiedDate", "FirstName", "LastName", "Name"})

PERMISSION_SET_ASSIGNMENTS = ("SELECT Id, AssigneeId, PermissionSetId, PermissionSetGroupId FROM "
                              "PermissionSetAssignment WHERE PermissionSetGroupId != null OR "
                              "PermissionSet.IsOwnedByProfile = false")
LICENCE_ASSIGNMENTS = "SELECT Id, AssigneeId, PermissionSetLicenseId FROM PermissionSetLicenseAssign"
GROUP_MEMBERSHIPS = "SELECT Id, GroupId, UserOrGroupId FROM GroupMember WHERE Group.Type IN ('Regular', 'Queue')"
#: A user's key prefix: GroupMember.UserOrGroupId also holds nested groups, which are no user's entitlement.
USER_PREFIX = "005"

log = get_logger(__name__)


class RowView(Mapping[str, Any]):
    """A read-only mapping over one compact row; what `plan`, `match_user` and the executor read."""

    __slots__ = ("_pos", "_values")

    def __init__(self, pos: dict[str, int], values: tuple[Any, ...]) -> None:
        self._pos = pos
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[self._pos[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pos)

    def __len__(self) -> int:
        return len(self._pos)


def user_fields(mapping: IdsyncMapping) -> list[str]:
    """The User fields reconciliation selects: the engine's, the link field, and the audit fields."""
    names = [*user_fields_to_read(mapping), *([mapping.link_field] if mapping.link_field else []), *AUDIT_FIELDS]
    return list(dict.fromkeys(names))


class SalesforceSide:
    """The org's users (compact), their entitlements, and the index `match_user` searches."""

    def __init__(self, fields: list[str], match_fields: tuple[str, ...]) -> None:
        self.fields = list(fields)
        self._pos = {name: i for i, name in enumerate(self.fields)}
        self._interned = [name not in _UNIQUE for name in self.fields]
        self._match_fields = match_fields
        self._views: list[RowView] = []
        self.entitlements = Entitlements()
        self.index = CandidateIndex((), match_fields)
        #: API calls the User rows took (REST pages, or the Bulk job's calls), apart from the entitlements'
        self.user_calls = 0
        self.rows = 0

    @classmethod
    def for_mapping(cls, mapping: IdsyncMapping) -> SalesforceSide:
        return cls(user_fields(mapping), mapping.compiled.match_fields)

    @property
    def select(self) -> str:
        return ", ".join(self.fields)

    def add_users(self, records: list[dict[str, Any]]) -> None:
        """Fold one page of User rows in (the page itself can then be dropped)."""
        intern = sys.intern
        for record in records:
            values = tuple(intern(v) if isinstance(v, str) and flag else v
                           for v, flag in zip((record.get(name) for name in self.fields), self._interned,
                                              strict=True))
            self._views.append(RowView(self._pos, values))
        self.rows += len(records)

    def add_entitlements(self, records: list[dict[str, Any]], assignable_ps: set[str]) -> None:
        rows = [r for r in records if "UserOrGroupId" not in r or str(r["UserOrGroupId"]).startswith(USER_PREFIX)]
        for row in rows:
            for key in ("PermissionSetId", "PermissionSetGroupId", "PermissionSetLicenseId", "GroupId"):
                if isinstance(row.get(key), str):
                    row[key] = sys.intern(row[key])
        self.entitlements.add(rows, assignable_ps)
        self.rows += len(records)

    def finish(self) -> None:
        """Index every row for matching; called once all User pages are in."""
        self.index = CandidateIndex(self._views, self._match_fields)
        self._views = []

    def user(self, sf_user_id: str | None) -> RowView | None:
        if not sf_user_id:
            return None
        found = self.index.by_id.get(sf_user_id)
        return found if isinstance(found, RowView) else None

    def users(self) -> Iterator[RowView]:
        for view in self.index.by_id.values():
            if isinstance(view, RowView):
                yield view

    def __len__(self) -> int:
        return len(self.index.by_id)


def read_salesforce_side(sf: Any, mapping: IdsyncMapping, assignable_ps: set[str],
                         on_page: Callable[[str, SalesforceSide], None] | None = None, *,
                         reader: QueryReader | None = None) -> SalesforceSide:
    """Every User row and every entitlement of the org: 2,000 rows per REST call, or one Bulk API 2.0 query job per
    query above the reader's threshold (`QueryReader`)."""
    side = SalesforceSide.for_mapping(mapping)
    reader = reader or QueryReader(sf)
    before = int(getattr(sf, "calls", 0) or 0)
    for records in reader.pages(f"SELECT {side.select} FROM User"):
        side.add_users(records)
        if on_page is not None:
            on_page("salesforce users", side)
    side.user_calls = int(getattr(sf, "calls", 0) or 0) - before
    side.finish()
    for soql in (PERMISSION_SET_ASSIGNMENTS, LICENCE_ASSIGNMENTS, GROUP_MEMBERSHIPS):
        for records in reader.pages(soql):
            side.add_entitlements(records, assignable_ps)
            if on_page is not None:
                on_page("salesforce entitlements", side)
    return side


class JobReader(Protocol):
    """What `QueryReader` needs of a Bulk query reader (`BulkQuery`)."""

    calls: int

    def pages(self, soql: str, types: Mapping[str, str] | None = None) -> Iterator[list[dict[str, Any]]]: ...


class QueryReader:
    """Reads a whole query the cheaper way: REST pages (2,000 rows a call) for a small result, a Bulk API 2.0 query
    job (a handful of calls whatever the size) above `bulk_threshold` rows.

    Why decide on the first REST page: it carries `totalSize`, so a small query costs its one call and nothing more,
    and a large one wastes one call (the page is dropped and the job reads every row; mixing the two would need an
    ordering the job cannot promise). A job the org refuses or fails (Bulk API not enabled for the run-as user, a
    timeout) falls back to the REST pages after that first one, with a warning: slower, never wrong.
    """

    def __init__(self, sf: Any, bulk: JobReader | None = None, bulk_threshold: int = 0,
                 types: Mapping[str, str] | None = None) -> None:
        self.sf = sf
        self.bulk = bulk
        self.bulk_threshold = bulk_threshold
        self.types = dict(types or {})
        #: queries read through a job, and the API calls the jobs took
        self.bulk_queries = 0
        self.bulk_calls = 0

    def pages(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        if self.bulk is None or self.bulk_threshold <= 0:
            yield from self.sf.query_pages(soql)
            return
        first = self.sf.query_page(soql)
        total = int(first.get("totalSize") or 0)
        if first.get("done", True) or total <= self.bulk_threshold:
            yield list(first.get("records", []))
            yield from self.sf.more_pages(first)
            return
        try:
            rows = self.bulk.pages(soql, self.types)
            page = next(rows, None)
        except BulkQueryUnavailable as exc:
            self.bulk_calls += self.bulk.calls
            log.warning("bulk_query_unavailable", error=exc.message, rows=total, fallback="rest")
            yield list(first.get("records", []))
            yield from self.sf.more_pages(first)
            return
        self.bulk_queries += 1
        while page is not None:
            yield page
            page = next(rows, None)
        self.bulk_calls += self.bulk.calls


def query_reader(sf: Any, settings: Any, catalog: Any, on_wait: Callable[[], None] | None = None) -> QueryReader:
    """The reader a run uses: Bulk API 2.0 above `reconcile_bulk_query_threshold` rows (0 = REST only), CSV typed
    with the User describe in the catalogue (the entitlement queries read only ids); `on_wait` runs after every
    status poll of a job (the run renews its lock there)."""
    threshold = int(getattr(settings, "reconcile_bulk_query_threshold", 0) or 0)
    if threshold <= 0 or not hasattr(sf, "request_with_headers"):
        return QueryReader(sf)
    bulk = BulkQuery(sf, max_records=int(settings.reconcile_bulk_query_max_records), on_wait=on_wait)
    types = {name: meta.type for name, meta in getattr(catalog, "user_fields", {}).items()}
    return QueryReader(sf, bulk, threshold, types)
