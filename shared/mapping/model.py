"""The mapping file as one pydantic model: what idsync gives each Entra user in Salesforce.

Why `extra="forbid"` everywhere: a misspelt key (`permision_sets`) silently ignored would quietly grant nothing; as
an error it names the line and the closest valid key. Why frozen: one loaded mapping is shared by every plan (and
swapped whole on reload), so nothing may change it in place.

Top-level keys: `version`, `scope`, `username`, `attributes`, `locale`, `manager`, `link_field`, `group_rules`,
`matching`, `offboarding` (its model: `shared.mapping.offboarding`), and the CRM sections `guests`, `enrichment`,
`requests` (each in its own module). docs/mapping.md is the reference of every key.

The model describes the file; `shared.mapping.compiled` turns it once into the fast form the engine runs, and
`Mapping.where(path)` names the file line a rule came from (the loader attaches its source map).
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from shared.mapping.offboarding import Offboarding
from shared.mapping.transforms import Template, TransformStep, parse_path

if TYPE_CHECKING:
    from shared.mapping.compiled import CompiledMapping
    from shared.mapping.enrichment import EnrichmentSpec
    from shared.mapping.guests import GuestsSpec
    from shared.mapping.source import SourceMap
    from shared.mapping.user_requests import RequestsSpec

FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: Salesforce User fields idsync fills from other sections; mapping them as attributes would fight those sections.
RESERVED_FIELDS = {
    "Id": "Salesforce assigns it",
    "ProfileId": "group_rules set the profile",
    "UserRoleId": "group_rules set the role",
    "Username": "the username: section sets it",
    "IsActive": "scope decides: a user leaving scope is deactivated",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field_name(value: str) -> str:
    if not FIELD_NAME.match(value):
        raise ValueError(f"'{value}' is not a Salesforce field API name (letters, digits, _; e.g. Title, Cost__c)")
    return value


def _path(value: str) -> str:
    parse_path(value)
    return value


def _template(value: str) -> str:
    Template(value)
    return value


AttributePath = Annotated[str, Field(min_length=1, description="Graph user property, dotted for nested objects")]


class OnEmpty(StrEnum):
    """What an empty Entra value does to the Salesforce field: `clear` empties it (Microsoft's connector never does,
    so stale titles and phone numbers linger), `keep` leaves whatever Salesforce holds."""

    CLEAR = "clear"
    KEEP = "keep"


# ------------------------------------------------------------------------------------------------------ scope


class ScopeFilter(_Model):
    """One condition on a Graph attribute; exactly one operator. Comparisons ignore case, `matches` does not
    (write `(?i)` in the pattern for that)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    attribute: AttributePath
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None
    exists: bool | None = None
    matches: str | None = Field(default=None, description="regular expression searched in the value")

    @field_validator("attribute")
    @classmethod
    def _attribute_path(cls, value: str) -> str:
        return _path(value)

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> ScopeFilter:
        given = [k for k in ("equals", "in_", "not_in", "exists", "matches") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a filter needs exactly one of equals, in, not_in, exists, matches")
        return self


class Scope(_Model):
    """Who idsync provisions. All conditions must hold; `groups` means "a member of any of these", transitively
    (through nested groups), by display name or object id."""

    groups: list[str] = Field(default_factory=list, description="display names or object ids; empty: no condition")
    user_types: list[str] = Field(default_factory=lambda: ["Member"], description="Member, Guest")
    filters: list[ScopeFilter] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ attributes


class AttributeSpec(_Model):
    """One Salesforce User field from Entra. Exactly one of `source`, `template`, `constant`.

    Order of work: the value (source / template / constant) -> `default` when it is empty -> `transforms` in order ->
    cut to the field's length when `truncate` (the length comes from the org's field metadata).
    """

    source: AttributePath | None = None
    template: str | None = Field(default=None, description="e.g. '{givenName} {surname}'")
    constant: str | bool | int | float | None = None
    default: str | None = Field(default=None, description="template used when the value is empty")
    transforms: list[TransformStep] = Field(default_factory=list)
    truncate: bool = Field(default=True, description="cut values longer than the field; false: review item")
    on_empty: OnEmpty = OnEmpty.CLEAR

    @field_validator("source")
    @classmethod
    def _source_path(cls, value: str | None) -> str | None:
        return None if value is None else _path(value)

    @field_validator("template", "default")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return None if value is None else _template(value)

    @model_validator(mode="after")
    def _one_value(self) -> AttributeSpec:
        given = [k for k in ("source", "template", "constant") if k in self.model_fields_set and getattr(self, k)
                 is not None]
        if len(given) != 1:
            raise ValueError("an attribute needs exactly one of source, template, constant")
        return self

    def describe(self) -> str:
        """Short human form for rule texts: `<- jobTitle`, `<- '{givenName} {surname}'`, `= true`."""
        if self.source is not None:
            return f"<- {self.source}"
        if self.template is not None:
            return f"<- '{self.template}'"
        return f"= {self.constant!r}"


def _attribute_shorthand(value: Any) -> Any:
    """`Title: jobTitle` is short for `Title: {source: jobTitle}`."""
    return {"source": value} if isinstance(value, str) else value


AttributeEntry = Annotated[
    AttributeSpec, BeforeValidator(_attribute_shorthand, json_schema_input_type=str | AttributeSpec)
]


# ------------------------------------------------------------------------------------------------------ username


def _default_username_transforms() -> list[TransformStep]:
    return ["strip_ext", "lower"]


class UsernameSpec(_Model):
    """Salesforce usernames are unique across ALL orgs (production and sandboxes): `suffix` keeps a sandbox org's
    usernames apart (`jane@contoso.com.uat`), and `on_duplicate` says what to do when Salesforce answers
    DUPLICATE_USERNAME: try the `duplicate_format` candidates in order, or raise a review item."""

    source: AttributePath = "userPrincipalName"
    transforms: list[TransformStep] = Field(default_factory=_default_username_transforms)
    suffix: str = ""
    on_duplicate: Literal["suffix", "review"] = "suffix"
    duplicate_format: str = Field(
        default="{local}.{n}@{domain}",
        description="placeholders {local} and {domain} of the username (suffix included), {n} from 2",
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="how many duplicate candidates to try")

    @field_validator("source")
    @classmethod
    def _source_path(cls, value: str) -> str:
        return _path(value)

    @field_validator("duplicate_format")
    @classmethod
    def _format(cls, value: str) -> str:
        names = set(re.findall(r"\{([^{}]*)\}", value))
        unknown = names - {"local", "domain", "n", "username"}
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (use {{local}}, {{domain}}, {{n}})")
        if "n" not in names:
            raise ValueError("the format needs {n}, or every candidate would be the same")
        return value


# ------------------------------------------------------------------------------------------------------ locale


class LocaleValues(_Model):
    """Salesforce's four per-user settings; each must be a value of the org's picklist (e.g. Europe/Berlin, de_DE,
    de, UTF-8). In `countries` any may be left out to take the built-in value for that country."""

    time_zone: str | None = None
    locale: str | None = None
    language: str | None = None
    email_encoding: str | None = None


class LocaleSpec(_Model):
    """Time zone, locale, language and email encoding from the user's country. Why `apply: create` by default:
    people set their own time zone in Salesforce (travel, remote work); overwriting it on every sync would undo
    that. `always` keeps them in step with Entra instead."""

    sources: list[AttributePath] = Field(default_factory=lambda: ["usageLocation", "country"],
                                         description="first non-empty wins; ISO codes or English country names")
    apply: Literal["create", "always"] = "create"
    countries: dict[str, LocaleValues] = Field(default_factory=dict, description="overrides of the built-in table")
    default: LocaleValues = Field(
        default_factory=lambda: LocaleValues(time_zone="GMT", locale="en_US", language="en_US",
                                             email_encoding="UTF-8"),
    )

    @field_validator("sources")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [_path(v) for v in value]


# ------------------------------------------------------------------------------------------------------ manager


class ManagerSpec(_Model):
    """The Entra manager link -> a Salesforce User lookup, through idsync's link of the manager. A manager not yet
    provisioned leaves the field as it is; the report is planned again once the manager is linked."""

    field: str = "ManagerId"
    on_empty: OnEmpty = OnEmpty.CLEAR

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return _field_name(value)


# ------------------------------------------------------------------------------------------------------ group rules


class GroupRule(_Model):
    """What members of one Entra group (transitively) get. Names are Salesforce API names: profile and role by
    Name (roles also by DeveloperName), permission sets by Name, the rest by DeveloperName.

    One profile and one role per user: the matching rule with the highest `precedence` that sets one wins (the
    earlier rule in the file on a tie). Everything else is the union over all matching rules."""

    group: str = Field(min_length=1, description="Entra group display name or object id")
    precedence: int = 0
    profile: str | None = None
    role: str | None = None
    permission_sets: list[str] = Field(default_factory=list)
    permission_set_groups: list[str] = Field(default_factory=list)
    permission_set_licenses: list[str] = Field(
        default_factory=list, description="extra licences; those a mapped permission set needs are added anyway"
    )
    public_groups: list[str] = Field(default_factory=list)
    queues: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ matching


def parse_match_rule(text: str) -> tuple[str, ...]:
    """`Email AND EmployeeNumber` -> ('Email', 'EmployeeNumber'); `link` -> ('link',)."""
    fields = tuple(part.strip() for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE))
    if fields == ("link",):
        return fields
    for name in fields:
        if name == "link":
            raise ValueError("'link' stands alone (it is the stored link, not a field)")
        _field_name(name)
    if len(set(fields)) != len(fields):
        raise ValueError("a field appears twice in the rule")
    return fields


class MatchingSpec(_Model):
    """How an Entra user finds an existing Salesforce user before idsync creates one. Each rule is `link` (idsync's
    stored link) or Salesforce User fields joined by AND; a field is compared with the value this mapping gives it
    (so `Username` includes the sandbox suffix). Exactly one record found across all rules -> link; none -> create;
    several, or different records by different rules -> a review item, nothing written."""

    rules: list[str] = Field(default_factory=lambda: ["link"])

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_match_rule(text)
        return value


# ------------------------------------------------------------------------------------------------------ the mapping



class Mapping(_Model):
    """The whole mapping file."""

    version: Literal[1] = 1
    scope: Scope = Field(default_factory=Scope)
    username: UsernameSpec = Field(default_factory=UsernameSpec)
    attributes: dict[str, AttributeEntry] = Field(default_factory=dict,
                                                  description="Salesforce User field -> where its value comes from")
    locale: LocaleSpec = Field(default_factory=LocaleSpec)
    manager: ManagerSpec | None = None
    link_field: str | None = Field(default=None, description="User field receiving the Entra object id, e.g. "
                                                             "Entra_Object_Id__c")
    group_rules: list[GroupRule] = Field(default_factory=list)
    matching: MatchingSpec = Field(default_factory=MatchingSpec)
    offboarding: Offboarding | None = Field(default=None, description="leavers: who gets their open records, leave "
                                            "of absence, licence reclaim (docs/offboarding.md)")
    guests: GuestsSpec | None = Field(default=None, description="B2B guests -> Contacts under their company's "
                                      "Account (docs/guests-and-requests.md)")
    enrichment: EnrichmentSpec | None = Field(default=None, description="Entra org data -> linked Contacts")
    requests: RequestsSpec | None = Field(default=None, description="approved Salesforce requests -> Entra accounts")

    _source: SourceMap | None = PrivateAttr(default=None)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
        for name in value:
            _field_name(name)
        return value

    @field_validator("link_field")
    @classmethod
    def _link_field(cls, value: str | None) -> str | None:
        return None if value is None else _field_name(value)

    # --- where rules come from ------------------------------------------------------------------------------
    def attach_source(self, source: SourceMap) -> None:
        """Called by the loader: from now on `where` names file lines. Resets the compiled form (rule texts)."""
        self._source = source
        self.__dict__.pop("compiled", None)

    @property
    def filename(self) -> str:
        return self._source.filename if self._source is not None else "mapping"

    def position(self, path: tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
        """(line, column) of the value (or with `key`, the key) at `path`; (1, 1) for a mapping built in code."""
        return self._source.locate(path, prefer_key=key) if self._source is not None else (1, 1)

    def where(self, path: tuple[str | int, ...]) -> str:
        """`("attributes", "Title")` -> `"mapping.yaml:14"`: the line a runtime review item points the admin to."""
        if self._source is None:
            return self.filename
        line, _column = self._source.locate(path, prefer_key=True)
        return f"{self._source.filename}:{line}"

    def __getstate__(self) -> dict[Any, Any]:
        """Pickles without the compiled form (it holds functions); the copy compiles again on first use."""
        state = super().__getstate__()
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != "compiled"}
        return state

    @cached_property
    def compiled(self) -> CompiledMapping:
        """The fast form the engine runs, built on first use and kept with this (immutable) mapping. A
        cached_property lives in the instance dict: reading it costs no more than a field (a private attribute
        would go through pydantic's slower __getattr__ on every plan)."""
        from shared.mapping.compiled import CompiledMapping

        return CompiledMapping(self)


# The CRM sections are models of their own modules, built on AttributeSpec and the field checks above: imported once
# those exist, then the Mapping's annotations naming them are resolved. (`shared.mapping` imports this module first.)
from shared.mapping.enrichment import EnrichmentSpec  # noqa: E402
from shared.mapping.guests import GuestsSpec  # noqa: E402
from shared.mapping.user_requests import RequestsSpec  # noqa: E402

Mapping.model_rebuild(_types_namespace={"EnrichmentSpec": EnrichmentSpec, "GuestsSpec": GuestsSpec,
                                        "RequestsSpec": RequestsSpec})
