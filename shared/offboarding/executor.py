"""Executes an offboarding plan's record moves and licence reclaim: sObject Collections, Bulk API 2.0 above the
threshold, retries of only what failed, fall-through to the next rule, an audit record per moved record.

How the guarantees hold:
- Fall-through: a record Salesforce refuses for its new owner (INACTIVE_OWNER_OR_USER, a validation rule, a queue
  that does not take the object, ...) is planned again by `offboarding_plan` with that `Attempt`, which resumes at
  the next rule; an owner reported inactive is skipped for every other record too. A record no rule places is a
  review item (topic "ownership") listing each rule's reason.
- Retries: a record answered UNABLE_TO_LOCK_ROW (or another transient code) is sent again in the next round, alone
  with the others that failed that way, after a short backoff; a whole call failing (5xx, timeout, a lock error
  for the request) is reconciled first: the chunk's records are read back, those already at their new owner count as
  moved, those still with the leaver are sent again. After `MAX_RETRY_ROUNDS` the task gives up with a
  `RetryableError` and the worker retries it later, from a fresh read.
- No double moves, no lost audit records: before a chunk is sent, its moves are journalled in Redis
  (`idsync:offboarding:inflight:{entra_id}`); the audit records of a chunk's successes and the removal of its
  journal entries are written in ONE Redis transaction. A worker killed between the two leaves the journal behind,
  and the next run (the redelivered message) first reads those records' owners and audits the ones that moved.
  Records already moved are never sent again: the reader only selects records the leaver still owns.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from simple_salesforce.format import format_soql

from shared.audit import audit
from shared.errors import SERVICE_SALESFORCE, RetryableError
from shared.logging import get_logger
from shared.mapping.model import Mapping
from shared.offboarding.plan import (
    Attempt,
    Leaver,
    OffboardingMode,
    OffboardingPlan,
    OpenRecord,
    RecordMove,
    Unplaced,
    offboarding_plan,
)
from shared.offboarding.reader import OffboardingInputs
from shared.salesforce_bulk import BulkIngest

log = get_logger("idsync.offboarding")

INFLIGHT_PREFIX = "idsync:offboarding:inflight"
OWNERSHIP_TOPIC = "ownership"
COLLECTION_LIMIT = 200
#: Salesforce processes a collection as one chunk per run of same-type records, at most 10 per request.
MAX_TYPE_RUNS = 10
MAX_RETRY_ROUNDS = 4
RETRY_BASE_S = 0.5
#: Per-record codes worth sending again unchanged.
RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION", "QUERY_TIMEOUT"})
#: Per-record codes meaning the record is gone: nothing to move.
GONE_CODES = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY_ID"})
INACTIVE_OWNER = "INACTIVE_OWNER_OR_USER"
_USER_ID = re.compile(r"\b(005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?)\b")
#: Review items list at most this many records (the count says how many there are).
REVIEW_RECORD_LIMIT = 50


class WriteApi(Protocol):
    def query_many(self, soqls: list[str]) -> list[list[dict[str, Any]]]: ...

    def collections_update(self, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]: ...

    def delete_records(self, ids: list[str], all_or_none: bool = False) -> list[dict[str, Any]]: ...

    def request_text(self, method: str, path: str, *, body: str | None = None,
                     content_type: str = "application/json", accept: str = "application/json") -> str: ...


@dataclass(frozen=True, slots=True)
class _Result:
    move: RecordMove
    kind: str  # ok | retry | refused | gone
    code: str = ""
    message: str = ""


@dataclass
class TransferReport:
    plan: OffboardingPlan
    moved: Counter[str] = field(default_factory=Counter)
    unplaced: tuple[Unplaced, ...] = ()
    recovered: int = 0
    skipped: int = 0  # records someone else moved (or deleted) meanwhile
    licences_removed: tuple[str, ...] = ()
    review_id: str | None = None

    @property
    def moved_total(self) -> int:
        return sum(self.moved.values())

    @property
    def outcome(self) -> str:
        if self.plan.mode is not OffboardingMode.OFFBOARD:
            return f"skipped_{self.plan.mode.value}"
        if not self.plan.configured:
            return "not_configured"
        return "partial" if self.unplaced else "done"

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "moved": dict(self.moved), "unplaced": len(self.unplaced),
                "recovered": self.recovered, "skipped": self.skipped, "licences_removed": list(self.licences_removed),
                "review_id": self.review_id}


def inflight_key(entra_id: str) -> str:
    return f"{INFLIGHT_PREFIX}:{entra_id}"


class OwnershipTransfer:
    """One leaver's transfer run. `sleep` is injectable so tests of retries do not wait."""

    def __init__(self, sf: WriteApi, redis: Any, links: Any, grants: Any, mapping: Mapping, *,
                 correlation_id: str | None, source_event: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, bulk: BulkIngest | None = None) -> None:
        self.sf = sf
        self.redis = redis
        self.links = links
        self.grants = grants
        self.mapping = mapping
        self.cid = correlation_id
        self.source_event = source_event
        self.sleep = sleep
        self.bulk = bulk or BulkIngest(sf)
        self.leaver: Leaver | None = None

    # --- the run ----------------------------------------------------------------------------------------------
    def run(self, inputs: OffboardingInputs) -> TransferReport:
        leaver = self.leaver = inputs.leaver
        first = offboarding_plan(leaver, inputs.records, inputs.directory, self.mapping, licences=inputs.licences)
        report = TransferReport(first)
        if first.mode is not OffboardingMode.OFFBOARD or not first.configured:
            return report
        report.recovered = self._recover()
        remaining: dict[str, OpenRecord] = {r.id: r for recs in inputs.records.values() for r in recs}
        attempts: dict[str, list[Attempt]] = {}
        refused: set[str] = set()
        retry_rounds = 0
        plan = first
        while True:
            plan = offboarding_plan(leaver, _by_object(remaining.values()), inputs.directory, self.mapping,
                                    licences=inputs.licences, attempts=attempts, refused_owners=frozenset(refused))
            if not plan.moves:
                break
            again = False
            for result in self._apply(plan):
                record = result.move.record
                if result.kind == "ok":
                    report.moved[record.sobject] += 1
                    remaining.pop(record.id, None)
                elif result.kind == "gone":
                    report.skipped += 1
                    remaining.pop(record.id, None)
                elif result.kind == "retry":
                    again = True
                else:
                    attempts.setdefault(record.id, []).append(
                        Attempt(record.id, result.move.rule_index, result.move.owner_id, result.code, result.message))
                    named = _USER_ID.findall(result.message)
                    if result.code == INACTIVE_OWNER and (not named or result.move.owner_id[:15] in
                                                          {n[:15] for n in named}):
                        refused.add(result.move.owner_id)
            if again:
                retry_rounds += 1
                if retry_rounds > MAX_RETRY_ROUNDS:
                    raise RetryableError(f"records still failing with transient errors after {MAX_RETRY_ROUNDS} "
                                         "rounds", service=SERVICE_SALESFORCE, code="UNABLE_TO_LOCK_ROW")
                self.sleep(RETRY_BASE_S * 2 ** (retry_rounds - 1))
        report.unplaced = plan.unplaced
        report.review_id = self._review(plan.unplaced)
        if leaver.sf_active is False and first.licences:
            report.licences_removed = self._reclaim(first)
        report.plan = first
        return report

    # --- applying moves ---------------------------------------------------------------------------------------
    def _apply(self, plan: OffboardingPlan) -> list[_Result]:
        results: list[_Result] = []
        by_object = plan.moves_by_object()
        collections = sorted((m for m in plan.moves if m.record.sobject not in plan.bulk_objects),
                             key=lambda m: (m.record.sobject, m.record.id))
        for chunk in _chunks(collections):
            results.extend(self._collections_chunk(chunk))
        for sobject in sorted(plan.bulk_objects):
            results.extend(self._bulk(sobject, by_object.get(sobject, [])))
        return results

    def _collections_chunk(self, chunk: list[RecordMove]) -> list[_Result]:
        self._journal(chunk)
        body = [{"attributes": {"type": m.record.sobject}, "id": m.record.id, "OwnerId": m.owner_id} for m in chunk]
        try:
            answers = self.sf.collections_update(body, all_or_none=False)
        except RetryableError as exc:
            log.warning("offboarding_chunk_failed", records=len(chunk), error=str(exc))
            return self._settle(self._reconcile(chunk))
        results = []
        for move, answer in zip(chunk, answers, strict=False):
            if answer.get("success"):
                results.append(_Result(move, "ok"))
                continue
            errors = answer.get("errors") or [{}]
            code = str(errors[0].get("statusCode") or errors[0].get("errorCode") or "UNKNOWN")
            results.append(_classified(move, code, str(errors[0].get("message") or "")))
        answered = {r.move.record.id for r in results}
        missing = [m for m in chunk if m.record.id not in answered]
        if missing:  # a short answer: find out from the records themselves
            results.extend(self._reconcile(missing))
        return self._settle(results)

    def _bulk(self, sobject: str, moves: list[RecordMove]) -> list[_Result]:
        if not moves:
            return []
        self._journal(moves)
        try:
            job = self.bulk.update(sobject, ["Id", "OwnerId"], [[m.record.id, m.owner_id] for m in moves])
        except RetryableError as exc:
            log.warning("offboarding_bulk_job_unfinished", object=sobject, records=len(moves), error=str(exc))
            return self._settle(self._reconcile(moves))
        if job.state != "JobComplete":
            log.warning("offboarding_bulk_job_failed", object=sobject, job=job.job_id, error=job.error)
            results: list[_Result] = []
            for chunk in _chunks(moves):  # the job as a whole was refused: collections instead
                results.extend(self._collections_chunk(chunk))
            return results
        by_id = {m.record.id[:15]: m for m in moves}
        results = [_Result(by_id[i[:15]], "ok") for i in job.succeeded if i[:15] in by_id]
        results += [_classified(by_id[f.id[:15]], f.code, f.message) for f in job.failed if f.id[:15] in by_id]
        answered = {r.move.record.id for r in results}
        missing = [m for m in moves if m.record.id not in answered]
        if missing:
            results.extend(self._reconcile(missing))
        return self._settle(results)

    def _reconcile(self, moves: Sequence[RecordMove]) -> list[_Result]:
        """After an answer we could not read: where are these records now? At their new owner: moved. Still with
        the leaver: send again. Elsewhere or deleted: someone else dealt with them."""
        owners = self._owners_now([(m.record.sobject, m.record.id) for m in moves])
        out = []
        for move in moves:
            now = owners.get(move.record.id[:15])
            if now is not None and now[:15] == move.owner_id[:15]:
                out.append(_Result(move, "ok"))
            elif now is not None and now[:15] == move.record.owner_id[:15]:
                out.append(_Result(move, "retry", "UNKNOWN", "the call failed; sent again"))
            else:
                out.append(_Result(move, "gone"))
        return out

    def _owners_now(self, records: Sequence[tuple[str, str]]) -> dict[str, str]:
        """15-character record id -> current OwnerId, one composite call per five objects (ids in chunks of 200)."""
        by_object: dict[str, list[str]] = {}
        for sobject, record_id in records:
            by_object.setdefault(sobject, []).append(record_id)
        queries = []
        for sobject, ids in sorted(by_object.items()):
            for start in range(0, len(ids), COLLECTION_LIMIT):
                queries.append(format_soql(f"SELECT Id, OwnerId FROM {sobject} WHERE Id IN {{}}",
                                           ids[start:start + COLLECTION_LIMIT]))
        owners: dict[str, str] = {}
        for rows in self.sf.query_many(queries) if queries else []:
            for row in rows:
                owners[str(row["Id"])[:15]] = str(row["OwnerId"])
        return owners

    # --- journal and audit ------------------------------------------------------------------------------------
    def _journal(self, moves: Sequence[RecordMove]) -> None:
        assert self.leaver is not None
        entries = {m.record.id: json.dumps({"sobject": m.record.sobject, "label": m.record.label,
                                            "from": m.record.owner_id, "to": m.owner_id, "to_name": m.owner_name,
                                            "rule_index": m.rule_index, "rule": m.rule}) for m in moves}
        if entries:
            self.redis.hset(inflight_key(self.leaver.entra_id), mapping=entries)

    def _settle(self, results: list[_Result], *, recovered: bool = False) -> list[_Result]:
        """Audit the moves that happened and drop the journal entries of every answered record, atomically."""
        assert self.leaver is not None
        leaver = self.leaver
        pipe = self.redis.pipeline(transaction=True)
        done: list[str] = []
        for result in results:
            if result.kind == "retry":
                continue  # still to do: the journal entry stays until it is settled
            done.append(result.move.record.id)
            if result.kind != "ok":
                continue
            move = result.move
            # audit() only appends to the stream: on a transaction pipeline the append commits with the HDEL below.
            audit(pipe, "record_transfer", leaver.entra_id, leaver.sf_user_id, "done", self.cid, upn=leaver.upn,
                  before={"OwnerId": move.record.owner_id}, after={"OwnerId": move.owner_id}, rule=move.rule,
                  source_event=self.source_event, object=move.record.sobject, record_id=move.record.id,
                  record=move.record.label, new_owner=move.owner_name, recovered=recovered)
        if done:
            pipe.hdel(inflight_key(leaver.entra_id), *done)
        pipe.execute()
        return results

    def _recover(self) -> int:
        """Settle what a killed run journalled but never confirmed; returns how many of those records had moved."""
        assert self.leaver is not None
        raw = self.redis.hgetall(inflight_key(self.leaver.entra_id))
        if not raw:
            return 0
        moves = []
        for record_id, text in raw.items():
            entry = json.loads(text)
            record = OpenRecord(str(record_id), entry["sobject"], entry["from"], entry.get("label", ""))
            moves.append(RecordMove(record, entry["to"], entry.get("to_name", entry["to"]),
                                    int(entry.get("rule_index", 0)), entry.get("rule", "")))
        results = [r if r.kind != "retry" else _Result(r.move, "gone") for r in self._reconcile(moves)]
        self._settle(results, recovered=True)
        recovered = sum(1 for r in results if r.kind == "ok")
        log.info("offboarding_journal_recovered", records=len(moves), moved=recovered)
        return recovered

    # --- review items and licences ----------------------------------------------------------------------------
    def _review(self, unplaced: Sequence[Unplaced]) -> str | None:
        assert self.leaver is not None
        leaver = self.leaver
        if not unplaced:
            if self.links.resolve_review(leaver.entra_id, OWNERSHIP_TOPIC):
                audit(self.redis, "review_resolved", leaver.entra_id, leaver.sf_user_id, "records_placed", self.cid,
                      upn=leaver.upn, topic=OWNERSHIP_TOPIC)
            return None
        counts = Counter(u.record.sobject for u in unplaced)
        first = unplaced[0]
        detail = (f"{len(unplaced)} open record(s) of the leaver could not be given a new owner "
                  f"({', '.join(f'{n} {o}' for o, n in sorted(counts.items()))}); they still belong to the "
                  f"deactivated user. First: {first.record.sobject} {first.record.id} {first.record.label}: "
                  + "; ".join(first.reasons))
        fix = ("fix the cause named per record (an active manager, a queue that takes the object, the fallback "
               "owner), or move them by hand; then `idsync review resolve ID --retry` places what is left")
        item = self.links.add_review(
            leaver.entra_id, leaver.sf_user_id, "records_unplaced", detail, upn=leaver.upn, correlation_id=self.cid,
            topic=OWNERSHIP_TOPIC, fix=fix,
            extra={"records": [u.to_dict() for u in unplaced[:REVIEW_RECORD_LIMIT]], "record_count": len(unplaced)})
        audit(self.redis, "review_opened", leaver.entra_id, leaver.sf_user_id, "records_unplaced", self.cid,
              upn=leaver.upn, topic=OWNERSHIP_TOPIC, review_id=item["id"], records=len(unplaced))
        return str(item["id"])

    def _reclaim(self, plan: OffboardingPlan) -> tuple[str, ...]:
        """Remove the permission sets idsync granted, then the licences (Salesforce keeps both on inactive users and
        the licences count as used seats). A refused removal is audited and left for an admin."""
        assert self.leaver is not None
        leaver = self.leaver
        removed: list[str] = []
        for kind in ("ps", "psl"):
            held = [h for h in plan.licences if h.kind == kind]
            if not held:
                continue
            answers = self.sf.delete_records([h.assignment_id for h in held], all_or_none=False)
            for licence, answer in zip(held, answers, strict=False):
                ok = bool(answer.get("success"))
                errors = answer.get("errors") or [{}]
                audit(self.redis, "entitlement_remove", leaver.entra_id, leaver.sf_user_id, "done" if ok else "failed",
                      self.cid, upn=leaver.upn, before={licence.kind: licence.name}, after={licence.kind: None},
                      rule="offboarding.reclaim_licences", entitlement=licence.key,
                      **({} if ok else {"code": errors[0].get("statusCode"), "reason": errors[0].get("message")}))
                if ok:
                    removed.append(licence.key)
        if removed and self.grants is not None:
            self.grants.record(leaver.entra_id, removed=removed)
        return tuple(removed)


def _classified(move: RecordMove, code: str, message: str) -> _Result:
    if code in RETRY_CODES:
        return _Result(move, "retry", code, message)
    if code in GONE_CODES:
        return _Result(move, "gone", code, message)
    return _Result(move, "refused", code, message)


def _by_object(records: Any) -> dict[str, list[OpenRecord]]:
    out: dict[str, list[OpenRecord]] = {}
    for record in records:
        out.setdefault(record.sobject, []).append(record)
    return out


def _chunks(moves: Sequence[RecordMove]) -> list[list[RecordMove]]:
    """Up to 200 moves per call and at most 10 runs of one object type (moves arrive sorted by object)."""
    chunks: list[list[RecordMove]] = []
    current: list[RecordMove] = []
    runs = 0
    for move in moves:
        new_run = not current or current[-1].record.sobject != move.record.sobject
        if current and (len(current) == COLLECTION_LIMIT or (new_run and runs == MAX_TYPE_RUNS)):
            chunks.append(current)
            current, runs, new_run = [], 0, True
        if new_run:
            runs += 1
        current.append(move)
    if current:
        chunks.append(current)
    return chunks
