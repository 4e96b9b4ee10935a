"""The `requests:` section: an approved `User_Provisioning_Request__c` in Salesforce becomes an Entra account.

Why off by default: it gives Salesforce users a way to create Entra accounts and add them to groups, so an admin
turns it on knowingly, after deploying the request object (`ops/salesforce/`), granting Graph write permissions
(User.ReadWrite.All, User.Invite.All, GroupMember.ReadWrite.All) and listing the groups a request may name. A group
that is not in `allowed_groups` fails the request: a request must never be a way into "Global Admins".

UPNs: `upn_format` on `upn_domain` (a verified domain of the tenant), names folded to ASCII and lower case; a taken
one gets a number (`jane.doe2@...`) up to `max_upn_attempts`. A request naming its UPN in `Requested_For__c` gets
exactly that one, or fails when it is taken.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.mapping.guests import normalise_domain


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EXTENSION_ATTRIBUTES = tuple(f"extensionAttribute{n}" for n in range(1, 16))
UPN_PLACEHOLDERS = frozenset({"first", "last", "initial"})


class PasswordSpec(_Model):
    length: int = Field(default=20, ge=12, le=256)
    force_change: bool = Field(default=True, description="forceChangePasswordNextSignIn")


class RequestsSpec(_Model):
    enabled: bool = False
    poll_interval_s: float = Field(default=15.0, ge=1.0, le=3600.0, description="how often Salesforce is asked")
    lookback_s: float = Field(default=60.0, ge=0, le=3600.0, description="re-read this much before the watermark: "
                              "a long transaction can commit a request stamped before the last poll")
    upn_domain: str | None = Field(default=None, description="a verified domain; none: the tenant's default domain")
    upn_format: str = Field(default="{first}.{last}", description="placeholders {first} {last} {initial}")
    max_upn_attempts: int = Field(default=20, ge=1, le=1000)
    usage_location: str | None = Field(default=None, description="two-letter country code (licences need one)")
    password: PasswordSpec = Field(default_factory=PasswordSpec)
    mark_attribute: str = Field(default="extensionAttribute15", description="onPremisesExtensionAttributes "
                                "property receiving the request Id: how a retry recognises the user it created")
    allowed_groups: list[str] = Field(default_factory=list, description="Entra groups (display names or ids) a "
                                      "request may name in Entra_Groups__c; any other fails the request")
    invite_redirect_url: str = Field(default="https://myapps.microsoft.com")
    send_invitation_message: bool = False

    @field_validator("upn_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else normalise_domain(value)

    @field_validator("upn_format")
    @classmethod
    def _format(cls, value: str) -> str:
        names = set(re.findall(r"\{([^{}]*)\}", value))
        unknown = names - UPN_PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (use {{first}}, {{last}}, {{initial}})")
        if not names & {"first", "last"}:
            raise ValueError("the format needs {first} or {last}")
        if "@" in value:
            raise ValueError("the format is the part before @ (the domain is upn_domain)")
        return value

    @field_validator("usage_location")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z]{2}", value):
            raise ValueError("a two-letter country code such as US or DE")
        return None if value is None else value.upper()

    @field_validator("mark_attribute")
    @classmethod
    def _mark(cls, value: str) -> str:
        if value not in EXTENSION_ATTRIBUTES:
            raise ValueError("one of extensionAttribute1 ... extensionAttribute15")
        return value

    @field_validator("invite_redirect_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("an https:// URL")
        return value
