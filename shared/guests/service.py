"""One user's CRM work, end to end: read Entra, decide (`shared.guests.plan`), write Salesforce, remember links.

`sync_contact` is what the sync lane's `sync.contact_changed` task runs for a guest event, a Contact-linked
employee's event, a removal, or (as `sync.contact_refresh`) a report whose manager changed. It returns the outcome
and the reports to refresh; the task publishes those, each as its own message with its own retries, so one bad
report never fails or repeats its manager's work.

Outcomes: `created`, `updated`, `in_sync`, `marked_inactive`, `review` (a person must decide: ambiguous matching,
an Account that cannot be resolved), `contact_rejected` (Salesforce refused the record, e.g. a validation rule),
`not_a_contact` (a member without a linked Contact), `gone` (deleted with no Contact), `not_configured`.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from shared.audit import audit
from shared.guests import salesforce_io as sfio
from shared.guests.graph_reader import read_user
from shared.guests.links import ContactLinks
from shared.guests.plan import (
    AccountDecision,
    ContactPlan,
    contact_link_field,
    decide_account,
    match_contact,
    new_account_values,
    pick_account,
    plan_account,
    plan_contact,
    plan_removed,
)
from shared.guests.subject import CrmSubject, build_subject
from shared.identity_links import IdentityLinks
from shared.logging import get_logger
from shared.mapping.model import Mapping

log = get_logger("idsync.guests")

#: Review reasons this module opens (and closes again once the Contact syncs).
REVIEW_REASONS = frozenset({"contact_match", "contact_rejected", "account_unresolved"})


@dataclass
class ContactDeps:
    graph: Any
    salesforce: Any
    redis: Any
    mapping: Mapping

    @property
    def links(self) -> ContactLinks:
        return ContactLinks(self.redis)

    @property
    def reviews(self) -> IdentityLinks:
        return IdentityLinks(self.redis)


@dataclass(frozen=True)
class ContactOutcome:
    outcome: str
    contact_id: str | None = None
    account_id: str | None = None
    reports: tuple[str, ...] = ()  # linked users whose Contact shows this user: refresh them
    detail: dict[str, Any] = field(default_factory=dict)
    guest: bool = False  # the user is a B2B guest (present in the tenant)


@dataclass(frozen=True)
class _Context:
    deps: ContactDeps
    subject: CrmSubject
    correlation_id: str | None
    source_event: str | None

    def audit(self, action: str, outcome: str, **extra: Any) -> None:
        audit(self.deps.redis, action, self.subject.entra_id, None, outcome, self.correlation_id,
              upn=self.subject.upn or None, source_event=self.source_event, **extra)

    def review(self, reason: str, detail: str, code: str | None = None) -> None:
        self.deps.reviews.add_review(self.subject.entra_id, None, reason, detail, upn=self.subject.upn or None,
                                     code=code, correlation_id=self.correlation_id)
        self.audit("review_opened", reason, reason=detail)


def sync_contact(deps: ContactDeps, entra_id: str, *, correlation_id: str | None = None,
                 source_event: str | None = None, fan_out: bool = True) -> ContactOutcome:
    mapping = deps.mapping
    if mapping.guests is None and mapping.enrichment is None:
        return ContactOutcome("not_configured")
    read = read_user(deps.graph, entra_id, mapping)
    link = deps.links.get(entra_id)
    reports = tuple(sorted(deps.links.reports_of(entra_id))) if fan_out else ()
    if read.user is None:
        subject = CrmSubject.gone(entra_id, read.deleted_upn or (link.upn if link else "") or "",
                                  read.deleted_type or "Guest")
        outcome = _removed(_Context(deps, subject, correlation_id, source_event), link)
        return ContactOutcome(outcome.outcome, outcome.contact_id, outcome.account_id, reports, outcome.detail)
    chain_spec = mapping.enrichment.manager_chain if mapping.enrichment is not None else None
    subject = build_subject(read.user, read.chain, read.groups, chain_spec)
    ctx = _Context(deps, subject, correlation_id, source_event)
    if subject.removed:
        outcome = _removed(ctx, link)
    elif subject.is_guest and mapping.guests is not None:
        outcome = _guest(ctx, link)
    elif mapping.enrichment is not None and (link is not None or mapping.enrichment.employees):
        outcome = _employee(ctx, link)
    else:
        outcome = ContactOutcome("not_a_contact")
    return ContactOutcome(outcome.outcome, outcome.contact_id, outcome.account_id, reports, outcome.detail,
                          guest=subject.is_guest and not subject.removed)


# ------------------------------------------------------------------------------------------------------ removed


def _removed(ctx: _Context, link: Any) -> ContactOutcome:
    deps, subject = ctx.deps, ctx.subject
    mapping = deps.mapping
    link_field = contact_link_field(mapping)
    wanted = [mapping.guests.removed.field] if mapping.guests and mapping.guests.removed else []
    candidates = sfio.contact_candidates(deps.salesforce, stored_id=link.contact_id if link else None,
                                         link_field=link_field, entra_id=subject.entra_id, email=None, fields=wanted)
    record = next((c for c in candidates if link and c.get("Id") == link.contact_id), None) or next(
        (c for c in candidates if link_field and c.get(link_field) == subject.entra_id), None)
    if record is None:
        return ContactOutcome("gone")
    if not (subject.is_guest if link is None else link.kind == "guest"):
        return ContactOutcome("in_sync", str(record["Id"]), detail={"reason": "employee Contacts stay as they are"})
    plan = plan_removed(mapping, record)
    written = _write(ctx, "Contact", plan)
    if written is None:
        return ContactOutcome("in_sync", plan.contact_id)
    if not written.ok:
        return _rejected(ctx, plan, written)
    ctx.audit("contact_inactive", "done", before=plan.before, after=plan.fields,
              rule="; ".join(dict.fromkeys(plan.rules.values())), contact_id=plan.contact_id)
    return ContactOutcome("marked_inactive", plan.contact_id)


# ------------------------------------------------------------------------------------------------------ guests


def _guest(ctx: _Context, link: Any) -> ContactOutcome:
    deps, subject = ctx.deps, ctx.subject
    decision = decide_account(subject, deps.mapping)
    account = _resolve_account(ctx, decision)
    if isinstance(account, str):
        ctx.review("account_unresolved", f"{subject.upn}: {account} ({decision.reason})")
        return ContactOutcome("review", detail={"reason": account})
    account_id, created_account = account
    return _contact(ctx, link, account_id=account_id, guest=True, account_decision=decision,
                    created_account=created_account)


def _resolve_account(ctx: _Context, decision: AccountDecision) -> tuple[str | None, bool] | str:
    """(Account Id or None, created now?), or a problem text for a review item."""
    deps, subject = ctx.deps, ctx.subject
    sf = deps.salesforce
    if decision.kind == "none":
        return None, False
    if decision.kind in ("mapped", "catch_all"):
        record, problem = sfio.account_by_reference(sf, str(decision.reference), [])
        return (str(record["Id"]), False) if record is not None else str(problem)
    spec = deps.mapping.guests
    assert spec is not None and decision.domain is not None
    field_name = decision.match_field
    metas = sfio.field_metas(sf, "Account")
    missing = [f for f in dict.fromkeys((field_name, spec.accounts.key_field)) if f and metas and f not in metas]
    if missing:
        return (f"the org's Account object has no field {missing[0]} (guests.accounts): deploy ops/salesforce or "
                f"change the mapping")

    def find() -> tuple[str | None, str | None]:
        if not field_name:
            return None, None
        return pick_account(sfio.accounts_with_domain(sf, field_name, decision.domain or "", []), field_name,
                            decision.domain or "")

    found, problem = find()
    if problem:
        return problem
    if found or not decision.create:
        return found, False
    # Two guests of one new company at the same moment: the lock makes the second wait for the first's Account
    # and find it; the upsert on key_field (when configured) holds even without Redis agreeing.
    with deps.links.domain_lock(decision.domain):
        found, problem = find()
        if problem:
            return problem
        if found:
            return found, False
        values, problems = new_account_values(subject, deps.mapping, sfio.field_metas(sf, "Account"))
        result = sfio.create_account(sf, values, spec.accounts.key_field)
        if not result.ok or not result.record_id:
            return f"Salesforce refused the Account for {decision.domain}: {result.describe()}"
        ctx.audit("account_create", "done", after=values, rule=decision.reason, account_id=result.record_id,
                  domain=decision.domain, problems=[p[1] for p in problems] or None)
        return result.record_id, True


# ------------------------------------------------------------------------------------------------------ Contacts


def _employee(ctx: _Context, link: Any) -> ContactOutcome:
    return _contact(ctx, link, account_id=None, guest=False, account_decision=None, created_account=False)


def _contact(ctx: _Context, link: Any, *, account_id: str | None, guest: bool,
             account_decision: AccountDecision | None, created_account: bool) -> ContactOutcome:
    deps, subject = ctx.deps, ctx.subject
    sf, mapping = deps.salesforce, deps.mapping
    link_field = contact_link_field(mapping)
    metas = sfio.field_metas(sf, "Contact")
    managed = _managed_contact_fields(mapping, guest)
    email = subject.email if guest else _address(subject.attrs)
    candidates = sfio.contact_candidates(sf, stored_id=link.contact_id if link else None, link_field=link_field,
                                         entra_id=subject.entra_id, email=email, fields=managed)
    owners = deps.links.owners(str(c["Id"]) for c in candidates if c.get("Id"))
    match = match_contact(subject, candidates, stored_contact_id=link.contact_id if link else None,
                          link_field=link_field, owners=owners)
    if not guest and match.kind == "create":
        return ContactOutcome("not_a_contact")  # employees are enriched, never turned into Contacts
    plan = plan_contact(subject, mapping, match, metas, account_id=account_id, guest=guest)
    if plan.action == "review":
        ctx.review("contact_match", f"{subject.upn}: {plan.reason}")
        return ContactOutcome("review", detail={"reason": plan.reason})
    for name, message, where in plan.problems:
        log.warning("contact_field_skipped", entra_id=subject.entra_id, field=name, problem=message, where=where)
    written = _write(ctx, "Contact", plan)
    if written is not None and not written.ok:
        return _rejected(ctx, plan, written)
    contact_id = (written.record_id if written is not None else None) or plan.contact_id
    assert contact_id
    record = match.record or {}
    final_account = plan.fields.get("AccountId") or record.get("AccountId") or account_id
    deps.links.record(subject.entra_id, contact_id, account_id=str(final_account) if final_account else None,
                   kind="guest" if guest else "employee", email=email, upn=subject.upn, chain=subject.chain_ids)
    _close_reviews(ctx)
    outcome = {"create": "created", "update": "updated"}.get(plan.action, "in_sync")
    if plan.action in ("create", "update"):
        ctx.audit("contact_sync", outcome, before=plan.before or None, after=plan.fields,
                  rule="; ".join(dict.fromkeys(plan.rules.values())), contact_id=contact_id,
                  account_id=final_account, matched_by=match.rule,
                  account_rule=account_decision.reason if account_decision else None)
    if final_account and mapping.enrichment is not None and mapping.enrichment.account and not (
            account_decision is not None and account_decision.kind == "catch_all"):
        _enrich_account(ctx, str(final_account))
    return ContactOutcome(outcome, contact_id, str(final_account) if final_account else None,
                          detail={"account_created": created_account} if created_account else {})


def _enrich_account(ctx: _Context, account_id: str) -> None:
    deps = ctx.deps
    spec = deps.mapping.enrichment
    assert spec is not None
    record, _problem = sfio.account_by_reference(deps.salesforce, account_id, list(spec.account))
    if record is None:
        return
    plan = plan_account(ctx.subject, deps.mapping, record, sfio.field_metas(deps.salesforce, "Account"))
    written = _write(ctx, "Account", plan)
    if written is not None and written.ok:
        ctx.audit("account_enrich", "done", before=plan.before, after=plan.fields,
                  rule="; ".join(dict.fromkeys(plan.rules.values())), account_id=account_id)
    elif written is not None:
        log.warning("account_enrichment_refused", account_id=account_id, error=written.describe())


def _write(ctx: _Context, sobject: str, plan: ContactPlan) -> sfio.WriteResult | None:
    return sfio.apply_plan(ctx.deps.salesforce, sobject, plan)


def _rejected(ctx: _Context, plan: ContactPlan, written: sfio.WriteResult) -> ContactOutcome:
    """Salesforce refused the record for a reason retrying cannot fix (a validation rule, a duplicate rule, a
    missing field permission): a review item with Salesforce's own message, and nothing retried."""
    what = "creating" if plan.action == "create" else "updating"
    detail = f"{ctx.subject.upn}: Salesforce refused {what} the Contact: {written.describe()}"
    ctx.review("contact_rejected", detail, code=written.code)
    ctx.audit("contact_sync", "rejected", after=plan.fields, code=written.code, error=written.message,
              contact_id=plan.contact_id)
    return ContactOutcome("contact_rejected", plan.contact_id, detail={"code": written.code,
                                                                        "error": written.message})


def _close_reviews(ctx: _Context) -> None:
    reviews = ctx.deps.reviews
    item = reviews.get_review(ctx.subject.entra_id)
    if item is not None and item.get("reason") in REVIEW_REASONS:
        reviews.resolve_review(ctx.subject.entra_id)
        ctx.audit("review_resolved", item["reason"])


def _managed_contact_fields(mapping: Mapping, guest: bool) -> list[str]:
    names: list[str] = []
    if guest and mapping.guests is not None:
        spec = mapping.guests
        names += list(spec.contact)
        names += [f for f in (spec.invitation_state_field, spec.relationship.field if spec.relationship else None,
                              spec.removed.field if spec.removed else None) if f]
    if mapping.enrichment is not None:
        names += list(mapping.enrichment.contact)
    return list(dict.fromkeys(names))


def _address(attrs: AbcMapping[str, Any]) -> str | None:
    mail = attrs.get("mail") or attrs.get("userPrincipalName")
    return str(mail).strip().lower() if mail and "@" in str(mail) else None
