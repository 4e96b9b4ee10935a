"""The `guests:` section: B2B guests become Contacts under the Account of their company.

Why a section of its own and not `scope.user_types: [Guest]`: a partner's or client's person is not a Salesforce
*user* (no licence, no profile); the CRM wants them as a Contact under their company's Account, from the day they
are invited. Which Account is decided by the guest's mail domain: the `accounts.domains` map first, then an Account
field (`accounts.match_field`, e.g. a domain field or Website), else a new Account. Public mail domains (gmail.com,
outlook.com, ...) say nothing about a company: such guests go under `catch_all_account` (or under no Account).

Values a Contact field can take are written like `attributes:` (source, template, constant, default, transforms),
read from the guest's Graph user plus `guest.email` and `guest.domain` (the address and domain idsync determined:
`mail`, else the first of `otherMails`, else the address inside the `#EXT#` UPN), and the enrichment sources
(`manager.*`, `managerChain`, see `shared.mapping.enrichment`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.mapping.model import AttributeEntry, AttributeSpec, _field_name, _template

#: Mail domains of public providers: an address there says nothing about a company, so it never creates an Account.
DEFAULT_PUBLIC_DOMAINS: tuple[str, ...] = (
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com", "ymail.com",
    "icloud.com", "me.com", "mac.com", "aol.com", "proton.me", "protonmail.com", "gmx.com", "gmx.de", "gmx.net",
    "web.de", "mail.com", "yandex.com", "zoho.com", "hey.com", "fastmail.com", "qq.com", "163.com",
)

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SF_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normalise_domain(value: str) -> str:
    """`Partner.Example.ORG.` -> `partner.example.org`, or ValueError for text that is no domain."""
    domain = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise ValueError(f"'{value}' is not a mail domain like partner.example.com")
    return domain


def looks_like_record_id(value: str, prefix: str = "001") -> bool:
    """An Account reference written as a Salesforce Id (15 or 18 characters, key prefix 001) rather than a Name."""
    return bool(_SF_ID.match(value)) and value.startswith(prefix)


def _fields(value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
    for name in value:
        _field_name(name)
    return value


def _default_contact_fields() -> dict[str, AttributeSpec]:
    return {
        "FirstName": AttributeSpec(source="givenName"),
        "LastName": AttributeSpec(source="surname", default="{displayName}"),
        "Email": AttributeSpec(source="guest.email"),
    }


class GuestAccounts(_Model):
    """Which Account a guest's Contact belongs to, by the guest's mail domain (public domains excepted)."""

    domains: dict[str, str] = Field(default_factory=dict,
                                    description="mail domain -> Account Id (001...) or Account Name; looked at first")
    match_field: str | None = Field(default=None, description="Account field holding the domain, e.g. "
                                    "Email_Domain__c or Website (Website compares the host, 'www.' ignored)")
    create: bool = Field(default=True, description="create an Account when none is found")
    key_field: str | None = Field(default=None, description="External ID field receiving the domain on created "
                                  "Accounts; creation is then an upsert on it (never two Accounts per domain)")
    name: str = Field(default="{companyName}", description="template for a created Account's Name; the domain "
                      "when it renders empty")
    fields: dict[str, AttributeEntry] = Field(default_factory=dict, description="more fields of a created Account")

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for domain, account in value.items():
            if not account.strip():
                raise ValueError(f"the Account for '{domain}' is empty")
            out[normalise_domain(domain)] = account.strip()
        return out

    @field_validator("match_field", "key_field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        return None if value is None else _field_name(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _template(value)

    @field_validator("fields")
    @classmethod
    def _account_fields(cls, value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
        return _fields(value)


class RelationshipRule(_Model):
    """`{group: Partners, value: Partner}` or `{domains: [client.example.com], value: Client}`."""

    value: str = Field(min_length=1, description="the picklist value written to the Contact")
    group: str | None = Field(default=None, description="Entra group (display name or id), membership transitive: "
                              "typically the group the guest was invited into")
    domains: list[str] | None = Field(default=None, description="the guest's mail domains")

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [normalise_domain(d) for d in value]

    @model_validator(mode="after")
    def _one_condition(self) -> RelationshipRule:
        if (self.group is None) == (self.domains is None):
            raise ValueError("a relationship rule needs exactly one of group, domains")
        return self


class GuestRelationship(_Model):
    """Partner, Distributor, Client...: the first matching rule wins, else `default` (none: the field is left)."""

    field: str = Field(description="Contact field, e.g. Relationship__c")
    default: str | None = None
    rules: list[RelationshipRule] = Field(default_factory=list)

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return _field_name(value)


Scalar = str | bool


class GuestRemoval(_Model):
    """What a guest deleted (or disabled) in Entra does to their Contact: this field gets `inactive_value`. Contacts
    are never deleted: their history (activities, opportunities) belongs to the CRM."""

    field: str = Field(description="Contact field, e.g. Entra_Status__c (picklist) or Inactive__c (checkbox)")
    inactive_value: Scalar = "Inactive"
    active_value: Scalar | None = Field(default="Active", description="written while the guest exists (a restored "
                                        "guest becomes active again); null: never written")

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return _field_name(value)


class GuestsSpec(_Model):
    """The whole `guests:` section."""

    accounts: GuestAccounts = Field(default_factory=GuestAccounts)
    public_domains: list[str] = Field(default_factory=lambda: list(DEFAULT_PUBLIC_DOMAINS),
                                      description="replaces the built-in list of public mail domains")
    extra_public_domains: list[str] = Field(default_factory=list, description="added to public_domains")
    catch_all_account: str | None = Field(default=None, description="Account Id or Name for guests with public "
                                          "addresses; none: their Contact has no Account")
    link_field: str | None = Field(default=None, description="Contact field receiving the Entra object id (Text 64, "
                                   "External ID, Unique), e.g. Entra_Object_Id__c")
    contact: dict[str, AttributeEntry] = Field(default_factory=_default_contact_fields,
                                               description="Contact field -> where its value comes from")
    invitation_state_field: str | None = Field(default=None, description="Contact field receiving "
                                               "externalUserState (PendingAcceptance, Accepted)")
    relationship: GuestRelationship | None = None
    removed: GuestRemoval | None = None

    @field_validator("public_domains", "extra_public_domains")
    @classmethod
    def _public(cls, value: list[str]) -> list[str]:
        return [normalise_domain(d) for d in value]

    @field_validator("link_field", "invitation_state_field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        return None if value is None else _field_name(value)

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
        return _fields(value)

    @field_validator("catch_all_account")
    @classmethod
    def _catch_all(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def all_public_domains(self) -> frozenset[str]:
        return frozenset([*self.public_domains, *self.extra_public_domains])


def guest_problems(spec: GuestsSpec) -> list[tuple[tuple[str | int, ...], str, str | None]]:
    """Rules across the keys of `guests:` (each with the path of the key to change)."""
    problems: list[tuple[tuple[str | int, ...], str, str | None]] = []
    root: tuple[str | int, ...] = ("guests",)
    if "LastName" not in spec.contact:
        problems.append(((*root, "contact"), "the Contact's LastName is required but not mapped",
                         "add LastName: {source: surname, default: '{displayName}'}"))
    special: dict[str, tuple[tuple[str | int, ...], str]] = {}
    if spec.link_field:
        special[spec.link_field] = ((*root, "link_field"), "link_field")
    if spec.invitation_state_field:
        special[spec.invitation_state_field] = ((*root, "invitation_state_field"), "invitation_state_field")
    if spec.relationship:
        special[spec.relationship.field] = ((*root, "relationship", "field"), "relationship.field")
    if spec.removed:
        special[spec.removed.field] = ((*root, "removed", "field"), "removed.field")
    seen: dict[str, str] = {}
    for name, (path, label) in special.items():
        if name in spec.contact:
            problems.append(((*root, "contact", name), f"{name} is set by guests.{label}",
                             "remove one of the two"))
        if name in seen:
            problems.append((path, f"{name} is both guests.{seen[name]} and guests.{label}", "use two fields"))
        seen[name] = label
    if spec.accounts.key_field and spec.accounts.key_field in spec.accounts.fields:
        problems.append(((*root, "accounts", "fields", spec.accounts.key_field),
                         f"{spec.accounts.key_field} is the key_field (it receives the domain)", "remove it here"))
    if "Name" in spec.accounts.fields:
        problems.append(((*root, "accounts", "fields", "Name"), "the Account Name comes from accounts.name",
                         "set accounts.name instead"))
    public = spec.all_public_domains()
    for domain in spec.accounts.domains:
        if domain in public:
            problems.append(((*root, "accounts", "domains", domain), f"{domain} is a public mail domain",
                             "remove it from the map, or from public_domains"))
    return problems
