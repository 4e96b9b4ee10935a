"""What a guest (or an enriched employee) should look like in the CRM, decided by pure functions.

The worker reads Graph and Salesforce, then asks these functions, in order:
1. `decide_account`: which Account the guest's Contact belongs to, by mail domain (public domains -> the
   catch-all), before any Salesforce call;
2. `pick_account` on the Accounts a lookup found, or `new_account_values` for the Account to create;
3. `match_contact`: the Contact the person already has (idsync's stored link, then the link field, then Email) or
   none, never a guess: two candidates, or one belonging to another Entra user, is a review item;
4. `plan_contact` / `plan_removed` / `plan_account`: the fields to create or the changed fields to update.

Contacts are never deleted. A Contact's Account is set when the Contact is created (or has none): a salesperson
who moved the Contact to another Account is not overruled.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.guests.fields import FieldMetas, changed_fields, check_value, compile_fields, desired_values
from shared.guests.fields import Problem as ValueProblem
from shared.guests.subject import CrmSubject
from shared.mapping.model import Mapping
from shared.mapping.transforms import Template

FieldProblem = tuple[str, str, str]  # (field, message, mapping line)
AccountKind = Literal["mapped", "domain", "catch_all", "none"]
WEBSITE = "Website"


# ------------------------------------------------------------------------------------------------------ Account


@dataclass(frozen=True)
class AccountDecision:
    """`mapped`/`catch_all`: `reference` is an Account Id or Name from the mapping; `domain`: look the domain up in
    `match_field` and create the Account if `create`; `none`: the Contact gets no Account."""

    kind: AccountKind
    domain: str | None
    reason: str
    reference: str | None = None
    match_field: str | None = None
    create: bool = False


def decide_account(subject: CrmSubject, mapping: Mapping) -> AccountDecision:
    spec = mapping.guests
    if spec is None:
        return AccountDecision("none", subject.domain, "no guests: section")
    domain = subject.domain
    catch_all = spec.catch_all_account
    where = mapping.where
    if domain is None or domain in spec.all_public_domains():
        why = "no mail address" if domain is None else f"public mail domain {domain}"
        if catch_all:
            return AccountDecision("catch_all", domain, f"{why}: catch-all Account '{catch_all}' "
                                   f"({where(('guests', 'catch_all_account'))})", reference=catch_all)
        return AccountDecision("none", domain, f"{why}: no Account (no catch_all_account)")
    mapped = spec.accounts.domains.get(domain)
    if mapped is not None:
        return AccountDecision("mapped", domain, f"domain {domain} -> Account '{mapped}' "
                               f"({where(('guests', 'accounts', 'domains', domain))})", reference=mapped)
    accounts = spec.accounts
    field_name = accounts.match_field or accounts.key_field
    if field_name is None and not accounts.create:
        return AccountDecision("none", domain, f"domain {domain} is not in accounts.domains and nothing looks further")
    how = f"Account.{field_name} = {domain}" if field_name else f"a new Account for {domain}"
    return AccountDecision("domain", domain, f"{how} ({where(('guests', 'accounts'))})", match_field=field_name,
                           create=accounts.create)


def website_host(value: str) -> str:
    """`https://www.Partner.example.org/about` -> `partner.example.org` (what a Website is compared by)."""
    text = value.strip().lower()
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    return host.removeprefix("www.").rstrip(".")


def account_has_domain(record: AbcMapping[str, Any], field_name: str, domain: str) -> bool:
    value = record.get(field_name)
    if not isinstance(value, str) or not value:
        return False
    if field_name == WEBSITE:
        return website_host(value) == domain
    return value.strip().lower() == domain


def pick_account(records: Sequence[AbcMapping[str, Any]], field_name: str, domain: str) -> tuple[str | None,
                                                                                                str | None]:
    """(Account Id, None) for exactly one Account carrying `domain`; (None, None) for none; (None, problem) for
    several: which company a Contact belongs to is not guessed."""
    hits = sorted({str(r["Id"]) for r in records if r.get("Id") and account_has_domain(r, field_name, domain)})
    if len(hits) == 1:
        return hits[0], None
    if not hits:
        return None, None
    return None, f"{len(hits)} Accounts carry {domain} in {field_name} ({', '.join(hits)}): link the Contact by hand " \
                 f"or make the domain unique"


def new_account_values(subject: CrmSubject, mapping: Mapping, metas: FieldMetas) -> tuple[dict[str, Any],
                                                                                         list[FieldProblem]]:
    """The fields of the Account created for the guest's domain: Name from `accounts.name` (the domain when it
    renders empty), the domain in `key_field` and `match_field` (Website as https://domain), `accounts.fields`."""
    spec = mapping.guests
    assert spec is not None and subject.domain is not None
    accounts = spec.accounts
    domain = subject.domain
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    name = Template(accounts.name).render(subject.attrs) or domain
    checked = check_value("Name", name, metas, "Account")
    values["Name"] = name if isinstance(checked, ValueProblem) else checked
    for field_name in dict.fromkeys(f for f in (accounts.key_field, accounts.match_field) if f):
        values[field_name] = f"https://{domain}" if field_name == WEBSITE else domain
    extra = desired_values(compile_fields(mapping, ("guests", "accounts", "fields"), accounts.fields), subject.attrs,
                           metas, "Account")
    values.update({k: v for k, v in extra.values.items() if k not in values})
    problems.extend(extra.problems)
    return values, problems


# ------------------------------------------------------------------------------------------------------ Contact


@dataclass(frozen=True)
class ContactMatch:
    kind: Literal["link", "create", "review"]
    record: AbcMapping[str, Any] | None = None
    rule: str | None = None  # "stored link", the link field, "Email"
    message: str | None = None

    @property
    def contact_id(self) -> str | None:
        return str(self.record["Id"]) if self.record and self.record.get("Id") else None


def match_contact(
    subject: CrmSubject,
    candidates: Sequence[AbcMapping[str, Any]],
    *,
    stored_contact_id: str | None,
    link_field: str | None,
    owners: AbcMapping[str, str] | None = None,
) -> ContactMatch:
    """Stored link, then the link field, then Email (case ignored). `owners`: Contact Id -> the Entra id idsync
    linked it to; a Contact linked (there or in `link_field`) to another Entra user is never taken over."""
    owners = owners or {}
    by_id = {str(c["Id"]): c for c in candidates if c.get("Id")}
    if stored_contact_id and stored_contact_id in by_id:
        return ContactMatch("link", by_id[stored_contact_id], "stored link")
    if link_field:
        linked = [c for c in by_id.values() if c.get(link_field) == subject.entra_id]
        if len(linked) == 1:
            return ContactMatch("link", linked[0], link_field)
        if len(linked) > 1:
            ids = ", ".join(sorted(str(c["Id"]) for c in linked))
            return ContactMatch("review", message=f"several Contacts carry this Entra id in {link_field} ({ids})")
    email = subject.email if subject.is_guest else _member_email(subject)
    if not email:
        return ContactMatch("create")
    same = [c for c in by_id.values() if isinstance(c.get("Email"), str) and c["Email"].casefold() == email]
    if not same:
        return ContactMatch("create")
    if len(same) > 1:
        ids = ", ".join(sorted(str(c["Id"]) for c in same))
        return ContactMatch("review", message=f"{len(same)} Contacts have Email {email} ({ids}): link one by hand "
                            f"(set {link_field or 'its link field'} to {subject.entra_id})")
    record = same[0]
    other = owners.get(str(record["Id"])) or (record.get(link_field) if link_field else None)
    if other and other != subject.entra_id:
        return ContactMatch("review", message=f"Contact {record['Id']} (Email {email}) is linked to another Entra "
                            f"user ({other})")
    return ContactMatch("link", record, "Email")


def _member_email(subject: CrmSubject) -> str | None:
    mail = subject.attrs.get("mail") or subject.upn
    return str(mail).strip().lower() if mail and "@" in str(mail) else None


@dataclass(frozen=True)
class ContactPlan:
    action: Literal["create", "update", "noop", "review"]
    contact_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # create: every field; update: the changed ones
    before: dict[str, Any] = field(default_factory=dict)  # update: their values now
    rules: dict[str, str] = field(default_factory=dict)  # field -> the rule (with mapping line) that set it
    problems: tuple[FieldProblem, ...] = ()  # fields left out; the rest still applies
    reason: str = ""


def relationship_for(subject: CrmSubject, mapping: Mapping) -> tuple[str | None, str]:
    """The first rule the guest matches (group membership, transitively; or mail domain), else the default."""
    spec = mapping.guests.relationship if mapping.guests else None
    if spec is None:
        return None, ""
    for index, rule in enumerate(spec.rules):
        where = mapping.where(("guests", "relationship", "rules", index))
        if rule.group is not None and rule.group.casefold() in subject.group_keys:
            return rule.value, f"relationship: member of {rule.group} ({where})"
        if rule.domains is not None and subject.domain in rule.domains:
            return rule.value, f"relationship: domain {subject.domain} ({where})"
    if spec.default is not None:
        return spec.default, f"relationship default ({mapping.where(('guests', 'relationship', 'default'))})"
    return None, ""


def contact_link_field(mapping: Mapping) -> str | None:
    if mapping.guests is not None and mapping.guests.link_field:
        return mapping.guests.link_field
    return mapping.enrichment.link_field if mapping.enrichment is not None else None


def wanted_contact_values(subject: CrmSubject, mapping: Mapping, metas: FieldMetas, *, guest: bool
                          ) -> tuple[dict[str, Any], dict[str, str], list[FieldProblem]]:
    """Every Contact field this mapping manages for the subject, with the rule of each and the fields left out."""
    values: dict[str, Any] = {}
    rules: dict[str, str] = {}
    problems: list[FieldProblem] = []

    def put(name: str, value: Any, rule: str, where: str) -> None:
        checked = check_value(name, value, metas, "Contact")
        if isinstance(checked, ValueProblem):
            problems.append((name, checked.message, where))
            return
        values[name] = checked
        rules[name] = rule

    sections: list[tuple[tuple[str, ...], Any]] = []
    if guest and mapping.guests is not None:
        spec = mapping.guests
        sections.append((("guests", "contact"), spec.contact))
        if spec.invitation_state_field:
            where = mapping.where(("guests", "invitation_state_field"))
            put(spec.invitation_state_field, subject.invitation_state, f"invitation state <- externalUserState "
                f"({where})", where)
        value, rule = relationship_for(subject, mapping)
        if value is not None and spec.relationship is not None:
            put(spec.relationship.field, value, rule, mapping.where(("guests", "relationship")))
        if spec.removed is not None and spec.removed.active_value is not None:
            where = mapping.where(("guests", "removed"))
            put(spec.removed.field, spec.removed.active_value, f"guest present in Entra ({where})", where)
    if mapping.enrichment is not None:
        sections.append((("enrichment", "contact"), mapping.enrichment.contact))
    for path, specs in sections:
        found = desired_values(compile_fields(mapping, path, specs), subject.attrs, metas, "Contact")
        for name, value in found.values.items():
            values[name] = value
            rules[name] = found.rules[name]
        problems.extend(found.problems)
    link_field = contact_link_field(mapping)
    if link_field:
        where = mapping.where(("guests" if mapping.guests and mapping.guests.link_field else "enrichment",
                               "link_field"))
        put(link_field, subject.entra_id, f"link_field {link_field} ({where})", where)
    return values, rules, problems


def plan_contact(subject: CrmSubject, mapping: Mapping, match: ContactMatch, metas: FieldMetas, *,
                 account_id: str | None, guest: bool) -> ContactPlan:
    if match.kind == "review":
        return ContactPlan("review", reason=match.message or "matching needs a person")
    values, rules, problems = wanted_contact_values(subject, mapping, metas, guest=guest)
    if match.kind == "create":
        values = {k: v for k, v in values.items() if v is not None}  # an empty field needs no value on insert
        if not values.get("LastName"):
            return ContactPlan("review", problems=tuple(problems), reason="the Contact's LastName would be empty "
                               "(guests.contact.LastName)")
        if account_id:
            values["AccountId"] = account_id
            rules["AccountId"] = "the guest's Account"
        return ContactPlan("create", fields=values, rules=rules, problems=tuple(problems),
                           reason="no Contact found: created")
    record = match.record or {}
    if account_id and not record.get("AccountId"):
        values["AccountId"] = account_id
        rules["AccountId"] = "the guest's Account (the Contact had none)"
    if not values.get("LastName", "x"):
        values.pop("LastName")  # never empty a required field: keep what the Contact has
    changes = changed_fields(record, values)
    action: Literal["update", "noop"] = "update" if changes else "noop"
    return ContactPlan(action, contact_id=match.contact_id, fields=changes,
                       before={k: record.get(k) for k in changes}, rules={k: rules[k] for k in changes},
                       problems=tuple(problems), reason=f"matched by {match.rule}")


def plan_removed(mapping: Mapping, record: AbcMapping[str, Any]) -> ContactPlan:
    """The guest is gone (deleted or disabled): the Contact is marked inactive as configured, never deleted."""
    spec = mapping.guests.removed if mapping.guests else None
    contact_id = str(record["Id"])
    if spec is None:
        return ContactPlan("noop", contact_id, reason="guests.removed is not configured: the Contact is left as is")
    where = mapping.where(("guests", "removed"))
    wanted = {spec.field: spec.inactive_value}
    changes = changed_fields(record, wanted)
    return ContactPlan("update" if changes else "noop", contact_id, fields=changes,
                       before={k: record.get(k) for k in changes},
                       rules={k: f"guest removed from Entra ({where})" for k in changes},
                       reason="guest removed from the tenant")


def plan_account(subject: CrmSubject, mapping: Mapping, record: AbcMapping[str, Any], metas: FieldMetas
                 ) -> ContactPlan:
    """`enrichment.account` on the Contact's Account (never the catch-all: it holds many companies' people)."""
    spec = mapping.enrichment
    account_id = str(record["Id"])
    if spec is None or not spec.account:
        return ContactPlan("noop", account_id)
    found = desired_values(compile_fields(mapping, ("enrichment", "account"), spec.account), subject.attrs, metas,
                           "Account")
    changes = changed_fields(record, found.values)
    return ContactPlan("update" if changes else "noop", account_id, fields=changes,
                       before={k: record.get(k) for k in changes}, rules={k: found.rules[k] for k in changes},
                       problems=found.problems, reason="enrichment.account")
