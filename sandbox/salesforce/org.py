"""The in-memory Salesforce org: records, ids, sessions, API usage, unique indexes and transactions.

Storage is one dict per object (`id -> flat record dict`, every field present, None when unset), because the SOQL
engine scans `records()` for 100,000-row queries and must not pay for per-row conversion. Stored dicts are never
mutated in place: a write replaces the dict, so a scan that grabbed the old one stays consistent and the transaction
journal can keep the old dict as the snapshot.

Every write goes through `insert`/`update`/`delete`/`upsert`, which run the rules in `sandbox.salesforce.rules` and
journal each touched record. `transaction()` groups writes (composite, collections with allOrNone): on failure the
journal restores the old dicts and the unique indexes, which is how Salesforce's rollback looks from outside.
Callers hold `state.lock` (the org takes it too; it is re-entrant).
"""

from __future__ import annotations

import collections
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.salesforce.api import SalesforceApiError, not_found
from sandbox.salesforce.schema import FieldInfo, ObjectDef, default_schema

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ALNUM = frozenset(_B62)
DAY_S = 86400.0


def id_suffix(id15: str) -> str:
    """The 3-character case-checksum Salesforce appends to make a case-insensitive 18-character id."""
    out = []
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out.append(_SUFFIX[bits])
    return "".join(out)


def make_id(prefix: str, n: int, pod: str = "5g") -> str:
    digits = []
    while True:
        n, r = divmod(n, 62)
        digits.append(_B62[r])
        if n == 0:
            break
    body = prefix + pod + "000" + "".join(reversed(digits)).rjust(7, "0")
    return body + id_suffix(body)


def normalize_id(value: Any) -> str | None:
    """Canonical 18-char id for a 15- or 18-char id string; None when it is not id-shaped."""
    if not isinstance(value, str) or len(value) not in (15, 18) or not set(value) <= _ALNUM:
        return None
    base = value[:15]
    suffix = id_suffix(base)
    if len(value) == 18 and value[15:].upper() != suffix:
        return None
    return base + suffix


def fmt_datetime(ts: float) -> str:
    """Salesforce REST datetime format, e.g. 2026-03-01T08:00:00.000+0000."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass
class Session:
    token: str
    user_id: str
    issued_at: float
    expires_at: float


@dataclass
class Txn:
    """One unit of work. `mixed_dml` turns on Salesforce's setup/non-setup separation check."""

    mixed_dml: bool = False
    journal: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = field(default_factory=list)
    setup_kind: bool | None = None
    first_object: str | None = None


class Org:
    """A Salesforce org. Implements the SOQL engine's `RecordSource` protocol (object_names, describe_fields,
    records, get) and the write API the REST routes use."""

    def __init__(
        self,
        *,
        clock: Any,
        config: Any,
        lock: threading.RLock | None = None,
        schema: dict[str, ObjectDef] | None = None,
        seed: int = 1,
    ) -> None:
        self.clock = clock
        self.config = config
        #: the sandbox's fault switches (set by `install`; None for an org built alone in tests)
        self.faults: Any = None
        #: called with (object name, operation) for every record written through the write API (`install` counts
        #: them in `state.activity.counters` as `sf_write`; seeding with `bulk_load` is not a write)
        self.on_write: Any = None
        self.lock = lock or threading.RLock()
        self.schema: dict[str, ObjectDef] = dict(schema or default_schema())
        self._lower = {name.lower(): od for name, od in self.schema.items()}
        self._by_prefix = {od.key_prefix: od.name for od in self.schema.values()}
        self.live: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self.deleted: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self._counter = 0
        self._case_counter = 1000
        self.org_id = make_id("00D", seed * 7919 + 11, pod="8a")
        self.sessions: dict[str, Session] = {}
        self._api_calls: collections.deque[float] = collections.deque()
        self.bulk_batches: collections.deque[float] = collections.deque()
        #: user id -> reason key or free text (see rules.DEACTIVATION_BLOCKERS)
        self.deactivation_blockers: dict[str, str] = {}
        #: unique indexes: (object, field) -> normalized value -> record id
        self.unique: dict[tuple[str, str], dict[Any, str]] = {}
        for od in self.schema.values():
            for f in od.fields.values():
                if f.unique:
                    self.unique[(od.name, f.name)] = {}
        #: (assignee, permission set or group id) -> PSA id; user id -> UserLogin id; (group, member) -> GroupMember
        self.psa_keys: dict[tuple[str, str], str] = {}
        self.user_login: dict[str, str] = {}
        self.member_keys: dict[tuple[str, str], str] = {}
        self.psla_keys: dict[tuple[str, str], str] = {}
        self.queue_sobjects: set[tuple[str, str]] = set()
        self.license_used: collections.Counter[str] = collections.Counter()
        self.psl_used: collections.Counter[str] = collections.Counter()
        self.integration_user_id: str | None = None
        #: connected-app public key (PEM) accepted for the JWT bearer flow; set by install()
        self.jwt_public_key_pem: bytes | None = None
        self.bulk_jobs: dict[str, Any] = {}
        #: Bulk API 2.0 query jobs (sandbox.salesforce.bulk_query) and their creation times for `DailyBulkV2QueryJobs`
        self.bulk_query_jobs: dict[str, Any] = {}
        self.bulk_query_created: collections.deque[float] = collections.deque()
        #: notable ids from the seed (see sandbox.salesforce.seed.seed_org)
        self.seed_info: dict[str, Any] = {}
        self._txn: Txn | None = None

    # ------------------------------------------------------------------ RecordSource (SOQL engine contract)
    def object_names(self) -> list[str]:
        return list(self.schema)

    def object_def(self, sobject: str) -> ObjectDef | None:
        return self._lower.get(sobject.lower())

    def describe_fields(self, sobject: str) -> dict[str, FieldInfo] | None:
        od = self.object_def(sobject)
        return None if od is None else od.fields

    def records(self, sobject: str, include_deleted: bool = False) -> Iterable[dict[str, Any]]:
        """A snapshot list of the stored dicts (no copying of rows): callers must not mutate them."""
        od = self.object_def(sobject)
        if od is None:
            return []
        with self.lock:
            rows = list(self.live[od.name].values())
            if include_deleted:
                rows.extend(self.deleted[od.name].values())
            if od.name in ("UserLicense", "PermissionSetLicense"):
                rows = [self._with_usage(od.name, r) for r in rows]
        return rows

    def _with_usage(self, name: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Licence rows carry live seat counts (kept as counters, not stored, so user writes stay O(1))."""
        used = self.license_used if name == "UserLicense" else self.psl_used
        return dict(rec, UsedLicenses=used[rec["Id"]])

    def get(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        rid = normalize_id(record_id)
        if rid is None:
            return None
        name = self._by_prefix.get(rid[:3])
        if name is None:
            return None
        rec = self.live[name].get(rid) or self.deleted[name].get(rid)
        if rec is not None and name in ("UserLicense", "PermissionSetLicense"):
            rec = self._with_usage(name, rec)
        return None if rec is None else (name, rec)

    def get_live(self, record_id: Any) -> tuple[str, dict[str, Any]] | None:
        rid = normalize_id(record_id)
        if rid is None:
            return None
        name = self._by_prefix.get(rid[:3])
        if name is None:
            return None
        rec = self.live[name].get(rid)
        return None if rec is None else (name, rec)

    def object_for_id(self, record_id: str) -> str | None:
        return self._by_prefix.get(record_id[:3]) if record_id else None

    # ------------------------------------------------------------------ ids, time
    def new_id(self, sobject: str) -> str:
        self._counter += 1
        return make_id(self.schema[sobject].key_prefix, self._counter)

    def now_str(self) -> str:
        return fmt_datetime(self.clock.time())

    def next_case_number(self) -> str:
        self._case_counter += 1
        return f"{self._case_counter:08d}"

    # ------------------------------------------------------------------ sessions and API usage
    def issue_session(self, user_id: str) -> Session:
        now = self.clock.time()
        lifetime = float(self.config.get("salesforce.session_lifetime_s", 7200))
        token = f"{self.org_id[:15]}!AQ{secrets.token_urlsafe(72)}"
        session = Session(token=token, user_id=user_id, issued_at=now, expires_at=now + lifetime)
        with self.lock:
            self.sessions[token] = session
        return session

    def session(self, token: str, now: float) -> Session | None:
        """The live session for a bearer token; None when unknown, expired on the sandbox clock or its user is
        inactive (deactivation ends a user's sessions in a real org)."""
        with self.lock:
            s = self.sessions.get(token)
            if s is None:
                return None
            if now >= s.expires_at:
                self.sessions.pop(token, None)
                return None
            user = self.live["User"].get(s.user_id)
            if user is None or not user["IsActive"]:
                return None
            return s

    def _prune(self, calls: collections.deque[float], now: float) -> None:
        while calls and calls[0] <= now - DAY_S:
            calls.popleft()

    def count_api_call(self, now: float, limit: int) -> tuple[bool, int]:
        """Count one call in the rolling 24 h window; (False, used) when the daily limit is already reached."""
        with self.lock:
            self._prune(self._api_calls, now)
            if len(self._api_calls) >= limit:
                return False, len(self._api_calls)
            self._api_calls.append(now)
            return True, len(self._api_calls)

    def api_usage(self, now: float) -> int:
        with self.lock:
            self._prune(self._api_calls, now)
            return len(self._api_calls)

    def count_bulk_batch(self, now: float) -> int:
        with self.lock:
            self._prune(self.bulk_batches, now)
            self.bulk_batches.append(now)
            return len(self.bulk_batches)

    # ------------------------------------------------------------------ admin hooks
    def set_deactivation_blocker(self, user_id: str, reason: str | None) -> None:
        """Mark (or clear, with None) a reason the user cannot be deactivated, e.g. "default_lead_owner".

        Known reason keys map to the UI wording in `rules.DEACTIVATION_BLOCKERS`; any other text is used verbatim.
        """
        rid = normalize_id(user_id)
        with self.lock:
            if rid is None or rid not in self.live["User"]:
                raise KeyError(f"no such user {user_id}")
            if reason is None:
                self.deactivation_blockers.pop(rid, None)
            else:
                self.deactivation_blockers[rid] = reason

    def set_total_licenses(self, license_name: str, total: int) -> None:
        """Change a UserLicense's (or PermissionSetLicense's) seat count, e.g. to provoke LICENSE_LIMIT_EXCEEDED."""
        with self.lock:
            for name in ("UserLicense", "PermissionSetLicense"):
                for rec in list(self.live[name].values()):
                    labels = {rec["Id"], rec.get("Name"), rec.get("MasterLabel"), rec.get("DeveloperName")}
                    if license_name in labels:
                        self.live[name][rec["Id"]] = dict(rec, TotalLicenses=int(total))
                        return
            raise KeyError(f"no such licence {license_name}")

    # ------------------------------------------------------------------ indexes
    def unique_key(self, f: FieldInfo, value: Any) -> Any:
        if isinstance(value, str) and not f.case_sensitive:
            return value.lower()
        return value

    def _index(self, name: str, rec: dict[str, Any]) -> None:
        rid = rec["Id"]
        for (obj, fname), idx in self.unique.items():
            if obj == name and rec.get(fname) is not None:
                idx[self.unique_key(self.schema[obj].fields[fname], rec[fname])] = rid
        if name == "User":
            if rec["IsActive"]:
                lic = self._license_of_profile(rec["ProfileId"])
                if lic:
                    self.license_used[lic] += 1
        elif name == "PermissionSetAssignment":
            self.psa_keys[(rec["AssigneeId"], rec["PermissionSetId"] or rec["PermissionSetGroupId"])] = rid
        elif name == "UserLogin":
            self.user_login[rec["UserId"]] = rid
        elif name == "GroupMember":
            self.member_keys[(rec["GroupId"], rec["UserOrGroupId"])] = rid
        elif name == "PermissionSetLicenseAssign":
            self.psla_keys[(rec["AssigneeId"], rec["PermissionSetLicenseId"])] = rid
            self.psl_used[rec["PermissionSetLicenseId"]] += 1
        elif name == "QueueSobject":
            self.queue_sobjects.add((rec["QueueId"], rec["SobjectType"]))

    def _unindex(self, name: str, rec: dict[str, Any]) -> None:
        rid = rec["Id"]
        for (obj, fname), idx in self.unique.items():
            if obj == name and rec.get(fname) is not None:
                key = self.unique_key(self.schema[obj].fields[fname], rec[fname])
                if idx.get(key) == rid:
                    del idx[key]
        if name == "User":
            if rec["IsActive"]:
                lic = self._license_of_profile(rec["ProfileId"])
                if lic:
                    self.license_used[lic] -= 1
        elif name == "PermissionSetAssignment":
            self.psa_keys.pop((rec["AssigneeId"], rec["PermissionSetId"] or rec["PermissionSetGroupId"]), None)
        elif name == "UserLogin":
            self.user_login.pop(rec["UserId"], None)
        elif name == "GroupMember":
            self.member_keys.pop((rec["GroupId"], rec["UserOrGroupId"]), None)
        elif name == "PermissionSetLicenseAssign":
            self.psla_keys.pop((rec["AssigneeId"], rec["PermissionSetLicenseId"]), None)
            self.psl_used[rec["PermissionSetLicenseId"]] -= 1
        elif name == "QueueSobject":
            self.queue_sobjects.discard((rec["QueueId"], rec["SobjectType"]))

    def _license_of_profile(self, profile_id: str | None) -> str | None:
        prof = self.live["Profile"].get(profile_id or "")
        return prof["UserLicenseId"] if prof else None

    def used_licenses(self, license_id: str) -> int:
        return self.license_used[license_id]

    # ------------------------------------------------------------------ raw store (journaled)
    def _journal(self, name: str, rid: str) -> None:
        if self._txn is not None:
            self._txn.journal.append((name, rid, self.live[name].get(rid), self.deleted[name].get(rid)))

    def put(self, name: str, rec: dict[str, Any]) -> None:
        """Store a (new dict for a) live record, keeping indexes right; journaled inside a transaction."""
        rid = rec["Id"]
        self._journal(name, rid)
        old = self.live[name].get(rid)
        if old is not None:
            self._unindex(name, old)
        self.deleted[name].pop(rid, None)
        self.live[name][rid] = rec
        self._index(name, rec)

    def remove(self, name: str, rid: str) -> dict[str, Any]:
        """Move a live record to the recycle bin (IsDeleted = true; still visible to queryAll)."""
        self._journal(name, rid)
        old = self.live[name].pop(rid)
        self._unindex(name, old)
        gone = dict(old, IsDeleted=True, SystemModstamp=self.now_str())
        self.deleted[name][rid] = gone
        return gone

    def bulk_load(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Seed path: store complete rows without rules or journaling (indexes still maintained)."""
        store = self.live[name]
        for rec in rows:
            store[rec["Id"]] = rec
            self._index(name, rec)

    def blank(self, name: str, rid: str, actor: str | None) -> dict[str, Any]:
        """A record with every field None plus system fields, the starting point of an insert."""
        od = self.schema[name]
        now = self.now_str()
        rec: dict[str, Any] = {f: None for f in od.fields}
        for f in od.fields.values():
            if f.type == "boolean":
                rec[f.name] = bool(f.default) if isinstance(f.default, bool) else False
        actor = actor or self.integration_user_id
        rec.update(Id=rid, IsDeleted=False, CreatedDate=now, LastModifiedDate=now, SystemModstamp=now,
                   CreatedById=actor, LastModifiedById=actor)
        return rec

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self, *, mixed_dml: bool = False) -> Iterator[Txn]:
        """Group writes; any exception rolls every journaled record back and re-raises.

        Nested calls join the outer transaction (a savepoint: only the inner writes are undone on inner failure).
        """
        with self.lock:
            outer = self._txn
            if outer is not None:
                mark = len(outer.journal)
                try:
                    yield outer
                except BaseException:
                    self._rollback(outer, mark)
                    raise
                return
            txn = Txn(mixed_dml=mixed_dml)
            self._txn = txn
            try:
                yield txn
            except BaseException:
                self._rollback(txn, 0)
                raise
            finally:
                self._txn = None

    def rollback(self, txn: Txn) -> None:
        """Undo everything a still-open transaction did (composite allOrNone after a later failure)."""
        with self.lock:
            self._rollback(txn, 0)

    def _rollback(self, txn: Txn, mark: int) -> None:
        while len(txn.journal) > mark:
            name, rid, old_live, old_deleted = txn.journal.pop()
            cur = self.live[name].pop(rid, None)
            if cur is not None:
                self._unindex(name, cur)
            self.deleted[name].pop(rid, None)
            if old_live is not None:
                self.live[name][rid] = old_live
                self._index(name, old_live)
            if old_deleted is not None:
                self.deleted[name][rid] = old_deleted

    def check_mixed_dml(self, od: ObjectDef) -> None:
        """Salesforce refuses setup and non-setup DML in one transaction (composite, collections)."""
        txn = self._txn
        if txn is None or not txn.mixed_dml:
            return
        if txn.setup_kind is None:
            txn.setup_kind, txn.first_object = od.setup, od.name
            return
        if txn.setup_kind != od.setup:
            raise SalesforceApiError(
                400,
                "MIXED_DML_OPERATION",
                "DML operation on setup object is not permitted after you have updated a non-setup object "
                f"(or vice versa): {od.name}, original object: {txn.first_object}",
            )

    # ------------------------------------------------------------------ write API (rules applied)
    def _wrote(self, sobject: str, operation: str) -> None:
        if self.on_write is not None:
            self.on_write(sobject, operation)

    def require_object(self, sobject: str) -> ObjectDef:
        od = self.object_def(sobject)
        if od is None:
            raise not_found()
        return od

    def insert(self, sobject: str, values: dict[str, Any], *, actor: str | None = None) -> str:
        from sandbox.salesforce import rules

        with self.lock:
            od = self.require_object(sobject)
            with self.transaction():
                self.check_mixed_dml(od)
                self._wrote(od.name, "insert")
                return rules.insert(self, od, values, actor or self.integration_user_id)

    def update(self, sobject: str | None, record_id: str, values: dict[str, Any], *, actor: str | None = None) -> str:
        """Update by id; `sobject` None means infer it from the id (composite/sobjects PATCH). Returns the id."""
        from sandbox.salesforce import rules

        with self.lock:
            od, rec = self.find(sobject, record_id)
            with self.transaction():
                self.check_mixed_dml(od)
                self._wrote(od.name, "update")
                rules.update(self, od, rec, values, actor or self.integration_user_id)
                return rec["Id"]

    def delete(self, sobject: str | None, record_id: str, *, actor: str | None = None) -> str:
        from sandbox.salesforce import rules

        with self.lock:
            od, rec = self.find(sobject, record_id)
            with self.transaction():
                self.check_mixed_dml(od)
                self._wrote(od.name, "delete")
                rules.delete(self, od, rec, actor or self.integration_user_id)
                return rec["Id"]

    def upsert(
        self, sobject: str, ext_field: str, value: str, values: dict[str, Any], *, actor: str | None = None,
        update_only: bool = False,
    ) -> tuple[str, bool]:
        """Upsert by an idLookup/external-id field. Returns (id, created); 300 with the matches when ambiguous."""
        with self.lock:
            od = self.require_object(sobject)
            matches = self.lookup(od, ext_field, value)
            if len(matches) > 1:
                raise MultipleMatches(od, matches)
            body = {k: v for k, v in values.items() if k.lower() != ext_field.lower()}
            f = od.field(ext_field)
            assert f is not None
            if matches:
                self.update(od.name, matches[0], body, actor=actor)
                return matches[0], False
            if update_only:
                raise not_found()
            if f.name != "Id":
                body[f.name] = value
            return self.insert(od.name, body, actor=actor), True

    def lookup(self, od: ObjectDef, ext_field: str, value: str) -> list[str]:
        """Ids whose `ext_field` equals `value` (case-insensitive unless the field is case-sensitive)."""
        f = od.field(ext_field)
        if f is None or not (f.external_id or f.id_lookup or f.name == "Id"):
            raise SalesforceApiError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {ext_field}"
            )
        if f.name == "Id":
            rid = normalize_id(value)
            return [rid] if rid and rid in self.live[od.name] else []
        idx = self.unique.get((od.name, f.name))
        if idx is not None:
            hit = idx.get(self.unique_key(f, value))
            return [hit] if hit else []
        want = self.unique_key(f, value)
        return [r["Id"] for r in self.live[od.name].values() if r[f.name] is not None
                and self.unique_key(f, r[f.name]) == want]

    def find(self, sobject: str | None, record_id: str) -> tuple[ObjectDef, dict[str, Any]]:
        """The object definition and live record, or the NOT_FOUND errors Salesforce gives."""
        if sobject is not None:
            od = self.require_object(sobject)
        rid = normalize_id(record_id)
        if rid is None:
            if sobject is not None:
                raise SalesforceApiError(
                    404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}"
                )
            raise SalesforceApiError(400, "MALFORMED_ID", f"malformed id {record_id}", ["Id"])
        name = self._by_prefix.get(rid[:3])
        if name is None or (sobject is not None and name != od.name):
            if sobject is None:
                raise SalesforceApiError(400, "MALFORMED_ID", f"malformed id {record_id}", ["Id"])
            raise not_found()
        rec = self.live[name].get(rid)
        if rec is None:
            if rid in self.deleted[name]:
                raise SalesforceApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
            raise not_found()
        return self.schema[name], rec


class MultipleMatches(SalesforceApiError):
    """Upsert matched several records: Salesforce answers 300 with the list of their URLs."""

    def __init__(self, od: ObjectDef, ids: list[str]) -> None:
        super().__init__(300, "MULTIPLE_CHOICES", f"multiple {od.name} records match")
        self.od = od
        self.ids = ids
