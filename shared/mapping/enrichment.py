"""The `enrichment:` section: Entra's organisational data copied onto Contacts (and their Accounts) linked to Entra
users, so nobody types department, cost centre or manager into the CRM twice.

Which Contacts: those of B2B guests (`guests:`), and, with `employees: true`, the one Contact of an Entra member
found by the link field or by Email. Values are written like `attributes:`, read from the user's Graph properties
plus:
- `manager.<property>`: the user's manager (e.g. `manager.displayName`, `manager.mail`);
- `managerChain`: the managers' names up the chain to `manager_chain.depth`, joined by `manager_chain.separator`.

They are kept current by the same user events as provisioning; a manager's change reaches their reports' Contacts
through a reverse index (manager -> linked reports, to `manager_chain.depth` levels).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.mapping.model import AttributeEntry, AttributeSpec, _field_name, _template

#: Sources that are not Graph user properties: idsync computes them (see the module docstring).
MANAGER = "manager"
MANAGER_CHAIN = "managerChain"
GUEST = "guest"
COMPUTED_ROOTS = frozenset({MANAGER, MANAGER_CHAIN, GUEST})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _fields(value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
    for name in value:
        _field_name(name)
    return value


class ManagerChainSpec(_Model):
    depth: int = Field(default=1, ge=1, le=10, description="managers read above the user (1: the manager only)")
    separator: str = " > "
    format: str = Field(default="{displayName}", description="template applied to each manager")

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        return _template(value)


class EnrichmentSpec(_Model):
    contact: dict[str, AttributeEntry] = Field(default_factory=dict, description="Contact field <- Entra")
    account: dict[str, AttributeEntry] = Field(default_factory=dict, description="field of the Contact's Account "
                                               "<- Entra (the linked user's data)")
    manager_chain: ManagerChainSpec = Field(default_factory=ManagerChainSpec)
    employees: bool = Field(default=False, description="also enrich the Contact of each Entra member (found by "
                            "link_field, else by Email = mail); every member event then costs a Contact query")
    link_field: str | None = Field(default=None, description="Contact field holding the Entra object id; "
                                   "guests.link_field when that is set")

    @field_validator("contact", "account")
    @classmethod
    def _names(cls, value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
        return _fields(value)

    @field_validator("link_field")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        return None if value is None else _field_name(value)


def enrichment_problems(spec: EnrichmentSpec, guest_contact_fields: set[str], guest_link_field: str | None
                        ) -> list[tuple[tuple[str | int, ...], str, str | None]]:
    problems: list[tuple[tuple[str | int, ...], str, str | None]] = []
    for name in spec.contact:
        if name in guest_contact_fields:
            problems.append((("enrichment", "contact", name), f"{name} is also mapped in guests.contact",
                             "map it in one of the two sections"))
    if spec.link_field and guest_link_field and spec.link_field != guest_link_field:
        problems.append((("enrichment", "link_field"), f"guests.link_field is {guest_link_field}",
                         "use the same Contact field in both sections (or leave this one out)"))
    if spec.employees and not (spec.link_field or guest_link_field):
        problems.append((("enrichment", "employees"), "employees need a Contact link field",
                         "set enrichment.link_field (e.g. Entra_Object_Id__c)"))
    if "Name" in spec.account or "Id" in spec.account:
        problems.append((("enrichment", "account"), "the Account's Id and Name are not enriched", "remove them"))
    return problems
