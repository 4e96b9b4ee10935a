"""Applies plans to Salesforce through sObject Collections, many users at once, in the order the engine requires.

Phases (each a handful of collection calls of up to 200 records, across every user of the batch):
1. new Users (POST); a DUPLICATE_USERNAME takes the next username candidate in another round;
2. changed Users (PATCH): fields, profile, role, manager, link field;
3. permission set licences (POST PermissionSetLicenseAssign) — before the permission sets that need them;
4. permission sets, permission set groups, public groups and queues (POST PermissionSetAssignment and GroupMember
   records, mixed in the same calls);
5. removals (DELETE assignments and memberships), then licence removals (a licence after the sets needing it).
Every object here is a setup object (User, PermissionSetAssignment, PermissionSetLicenseAssign, GroupMember), so no
call mixes setup and non-setup records (MIXED_DML_OPERATION).

Phase 2 goes through one Bulk API 2.0 update job instead when a batch changes more Users than `bulk_threshold`
(reconciliation writes thousands at a time; the sync lane's batches of 200 never do): a job is a handful of calls
whatever the size, where collections cost one per 200. Rows answer one by one as collection results do, so the
outcomes are the same; a job that fails as a whole, or rows it did not report, go through collections.

Per-record errors never fail the batch: each becomes an outcome for that user (`UserResult`) — a review item naming
the field and the mapping line, a licence shortage (retried when seats free up), or a transient error (the user goes
back to the backlog). Progress is reported as it happens through a `Recorder` (links, grants, audit), so a batch
interrupted between phases leaves nothing unrecorded, and planning again from fresh state completes it (a duplicate
assignment counts as done).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.engine import Change, ChangeKind, Plan, PlanAction
from shared.errors import PermanentError, RetryableError
from shared.logging import get_logger

log = get_logger(__name__)

#: Salesforce per-record codes that mean "try the same write again later".
TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION",
                             "REQUEST_RUNNING_TOO_LONG", "QUERY_TIMEOUT"})
#: Codes meaning the assignment or membership already exists / is already gone: the goal is reached.
ALREADY_DONE = frozenset({"DUPLICATE_VALUE"})
ALREADY_GONE = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})
LICENCE_CODES = frozenset({"LICENSE_LIMIT_EXCEEDED"})

_ADDS = {ChangeKind.ADD_PERMISSION_SET, ChangeKind.ADD_PERMISSION_SET_GROUP, ChangeKind.ADD_GROUP,
         ChangeKind.ADD_QUEUE}
_REMOVES = {ChangeKind.REMOVE_PERMISSION_SET, ChangeKind.REMOVE_PERMISSION_SET_GROUP, ChangeKind.REMOVE_GROUP,
            ChangeKind.REMOVE_QUEUE}
_USER_FIELDS = {ChangeKind.UPDATE_FIELD, ChangeKind.SET_PROFILE, ChangeKind.SET_ROLE}


@dataclass(frozen=True)
class Failure:
    change: Change
    code: str
    message: str
    fields: tuple[str, ...] = ()

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES

    @property
    def licence(self) -> bool:
        return self.code in LICENCE_CODES


@dataclass
class UserResult:
    plan: Plan
    sf_user_id: str | None
    created: bool = False
    applied: list[Change] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def retry(self) -> bool:
        """A transient error: the user goes back to the backlog and is planned again."""
        return any(f.transient for f in self.failed)

    @property
    def licence_blocked(self) -> bool:
        return any(f.licence for f in self.failed)


class Recorder(Protocol):
    """Where progress goes as it is made (links, grants and audit in Redis; see `shared.provisioning.batch`)."""

    def linked(self, plan: Plan, sf_user_id: str, change: Change | None) -> None: ...
    def applied(self, plan: Plan, sf_user_id: str, change: Change) -> None: ...
    def failed(self, plan: Plan, sf_user_id: str | None, failure: Failure) -> None: ...


@dataclass
class _Pending:
    """A record to write for one change of one user."""

    result: UserResult
    change: Change
    record: dict[str, Any]


def _errors(result: Mapping[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    errors = result.get("errors") or [{}]
    first = errors[0] if isinstance(errors, list) and errors else {}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN_EXCEPTION")
    return code, str(first.get("message") or code), tuple(first.get("fields") or ())


class Executor:
    def __init__(self, sf: Any, recorder: Recorder, *, bulk: Any = None, bulk_threshold: int = 0) -> None:
        self.sf = sf
        self.recorder = recorder
        self.calls = 0
        self.bulk = bulk  # a `shared.salesforce_bulk.BulkIngest`, or None: collections only
        self.bulk_threshold = bulk_threshold

    # ------------------------------------------------------------------ entry point
    def apply(self, plans: Iterable[Plan], username_candidates: Mapping[str, list[str]] | None = None,
              nickname_retry: Mapping[str, str] | None = None) -> dict[str, UserResult]:
        """Apply every plan (create/update); other actions are returned untouched for the caller to route."""
        results = {p.entra_id: UserResult(p, p.sf_user_id) for p in plans}
        todo = [r for r in results.values() if r.plan.action in (PlanAction.CREATE, PlanAction.UPDATE)]
        # every plan that carries a link, a matched user out of scope included: the match is as certain, and a
        # report whose manager this is can be bound in the same run instead of waiting for the revocation lane
        self._links(list(results.values()))
        self._creates([r for r in todo if r.plan.action is PlanAction.CREATE], username_candidates or {},
                      nickname_retry or {})
        self._updates([r for r in todo if r.plan.action is PlanAction.UPDATE])
        ready = [r for r in todo if r.sf_user_id and not (r.plan.action is PlanAction.CREATE and not r.created)]
        self._inserts(ready, {ChangeKind.ADD_LICENCE})
        self._inserts(ready, _ADDS)
        self._deletes(ready, _REMOVES)
        self._deletes(ready, {ChangeKind.REMOVE_LICENCE})
        return results

    # ------------------------------------------------------------------ phases
    def _links(self, todo: list[UserResult]) -> None:
        """A matched existing user is linked before anything is written (the link field, if any, is a field)."""
        for result in todo:
            for change in result.plan.changes:
                if change.kind is ChangeKind.LINK and result.sf_user_id:
                    self.recorder.linked(result.plan, result.sf_user_id, change)
                    result.applied.append(change)

    def _creates(self, todo: list[UserResult], candidates: Mapping[str, list[str]],
                 nickname_retry: Mapping[str, str]) -> None:
        attempt: dict[str, int] = {r.plan.entra_id: 0 for r in todo}
        nick_retried: set[str] = set()
        pending = list(todo)
        while pending:
            batch: list[tuple[UserResult, Change, dict[str, Any]]] = []
            for result in pending:
                change = next(c for c in result.plan.changes if c.kind is ChangeKind.CREATE_USER)
                record = dict(change.after)
                names = candidates.get(result.plan.entra_id) or []
                n = attempt[result.plan.entra_id]
                if n and n < len(names):
                    record["Username"] = names[n]
                if result.plan.entra_id in nick_retried and result.plan.entra_id in nickname_retry:
                    record["CommunityNickname"] = nickname_retry[result.plan.entra_id]
                batch.append((result, change, {"attributes": {"type": "User"}, **record}))
            answers = self._post([b[2] for b in batch])
            pending = []
            for (result, change, record), answer in zip(batch, answers, strict=True):
                if answer.get("success"):
                    result.sf_user_id = str(answer["id"])
                    result.created = True
                    result.applied.append(change)
                    self.recorder.linked(result.plan, result.sf_user_id, None)
                    self.recorder.applied(result.plan, result.sf_user_id, change)
                    continue
                code, message, fields = _errors(answer)
                entra_id = result.plan.entra_id
                names = candidates.get(entra_id) or []
                if code == "DUPLICATE_USERNAME" and attempt[entra_id] + 1 < len(names):
                    attempt[entra_id] += 1
                    pending.append(result)
                    continue
                if code == "DUPLICATE_COMM_NICKNAME" and entra_id in nickname_retry and entra_id not in nick_retried:
                    nick_retried.add(entra_id)
                    pending.append(result)
                    continue
                if code == "DUPLICATE_USERNAME":
                    message = (f"{message} (tried {', '.join(names[: attempt[entra_id] + 1]) or record['Username']}; "
                               "Salesforce usernames are unique across all orgs)")
                self._fail(result, Failure(change, code, message, fields))

    def _updates(self, todo: list[UserResult]) -> None:
        batch: list[tuple[UserResult, list[Change], dict[str, Any]]] = []
        for result in todo:
            record = result.plan.user_record()
            changes = [c for c in result.plan.changes if c.kind in _USER_FIELDS]
            if record and result.sf_user_id:
                batch.append((result, changes, {"attributes": {"type": "User"}, "id": result.sf_user_id, **record}))
        if not batch:
            return
        records = [b[2] for b in batch]
        if self.bulk is not None and 0 < self.bulk_threshold < len(records):
            answers = self._bulk_update(records)
        else:
            answers = self._collections_update(records)
        for (result, changes, _record), answer in zip(batch, answers, strict=True):
            if answer.get("success"):
                for change in changes:
                    result.applied.append(change)
                    assert result.sf_user_id is not None
                    self.recorder.applied(result.plan, result.sf_user_id, change)
                continue
            code, message, fields = _errors(answer)
            culprit = next((c for c in changes if c.target in fields), None) or (changes[0] if changes else None)
            if culprit is None:
                continue
            self._fail(result, Failure(culprit, code, message, fields))

    def _inserts(self, ready: list[UserResult], kinds: set[ChangeKind]) -> None:
        pending: list[_Pending] = []
        for result in ready:
            assert result.sf_user_id is not None
            for change in result.plan.changes:
                if change.kind in kinds and change.sf_id:
                    pending.append(_Pending(result, change, _assignment(change, result.sf_user_id)))
        if not pending:
            return
        answers = self._post([p.record for p in pending])
        for item, answer in zip(pending, answers, strict=True):
            code, message, fields = ("", "", ()) if answer.get("success") else _errors(answer)
            if answer.get("success") or code in ALREADY_DONE:
                item.result.applied.append(item.change)
                self.recorder.applied(item.result.plan, str(item.result.sf_user_id), item.change)
            else:
                self._fail(item.result, Failure(item.change, code, message, fields))

    def _deletes(self, ready: list[UserResult], kinds: set[ChangeKind]) -> None:
        pending = [(r, c) for r in ready for c in r.plan.changes if c.kind in kinds and c.record_id]
        if not pending:
            return
        answers = self._in_calls(self.sf.delete_records, [str(c.record_id) for _r, c in pending])
        for (result, change), answer in zip(pending, answers, strict=True):
            code, message, fields = ("", "", ()) if answer.get("success") else _errors(answer)
            if answer.get("success") or code in ALREADY_GONE:
                result.applied.append(change)
                self.recorder.applied(result.plan, str(result.sf_user_id), change)
            else:
                self._fail(result, Failure(change, code, message, fields))

    # ------------------------------------------------------------------ plumbing
    def _in_calls(self, call: Callable[[list[Any]], list[dict[str, Any]]], items: list[Any]) -> list[dict[str, Any]]:
        """One sObject Collections call per 200 items, the answers in the items' order."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(items), 200):
            self.calls += 1
            answers.extend(call(items[start : start + 200]))
        return answers

    def _collections_update(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._in_calls(self.sf.collections_update, records)

    def _bulk_update(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One Bulk API 2.0 update job for every record, answered per record like `collections_update`."""
        header, rows = bulk_rows(records)
        answers: dict[str, dict[str, Any]] = {}
        try:
            job = self.bulk.update("User", header, rows)
        except (PermanentError, RetryableError) as exc:
            if isinstance(exc, RetryableError) and exc.code != "BULK_JOB_TIMEOUT":
                raise  # throttled or unreachable: collections would fare no better; the batch is retried
            log.warning("bulk_update_unavailable", error=exc.message, records=len(records), fallback="collections")
            job = None
        if job is not None:
            self.calls += job.calls
        if job is not None and job.state == "JobComplete":
            for sf_id in job.succeeded:
                answers[sf_id[:15]] = {"success": True, "id": sf_id}
            for failure in job.failed:
                answers[failure.id[:15]] = {"success": False, "errors": [
                    {"statusCode": failure.code, "message": failure.message, "fields": list(failure.fields)}]}
        missing = [r for r in records if str(r["id"])[:15] not in answers]
        if missing:  # the job failed as a whole, or left rows unreported: collections are idempotent for updates
            for record, answer in zip(missing, self._collections_update(missing), strict=True):
                answers[str(record["id"])[:15]] = answer
        return [answers[str(r["id"])[:15]] for r in records]

    def _post(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._in_calls(self.sf.create_records, records)

    def _fail(self, result: UserResult, failure: Failure) -> None:
        result.failed.append(failure)
        self.recorder.failed(result.plan, result.sf_user_id, failure)


def bulk_rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """User updates as one CSV: Id, then every field any record sets. In a Bulk API 2.0 update an empty cell leaves
    the field as it is and `#N/A` sets it to null (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/
    api_asynch/datafiles_prepare_csv.htm), so records changing different fields share the header."""
    fields = sorted({k for r in records for k in r if k not in ("attributes", "id", "Id")})
    rows = [[str(r["id"]), *(_cell(r[f]) if f in r else "" for f in fields)] for r in records]
    return ["Id", *fields], rows


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _assignment(change: Change, sf_user_id: str) -> dict[str, Any]:
    """The assignment or membership record a change adds."""
    if change.kind is ChangeKind.ADD_LICENCE:
        return {"attributes": {"type": "PermissionSetLicenseAssign"}, "AssigneeId": sf_user_id,
                "PermissionSetLicenseId": change.sf_id}
    if change.kind is ChangeKind.ADD_PERMISSION_SET:
        return {"attributes": {"type": "PermissionSetAssignment"}, "AssigneeId": sf_user_id,
                "PermissionSetId": change.sf_id}
    if change.kind is ChangeKind.ADD_PERMISSION_SET_GROUP:
        return {"attributes": {"type": "PermissionSetAssignment"}, "AssigneeId": sf_user_id,
                "PermissionSetGroupId": change.sf_id}
    return {"attributes": {"type": "GroupMember"}, "GroupId": change.sf_id, "UserOrGroupId": sf_user_id}
