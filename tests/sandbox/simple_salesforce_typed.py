"""Typed access to two things simple-salesforce's annotations get wrong, for the tests that drive the sandbox with it.

- `SalesforceError.content` is annotated `bytes`, but holds the parsed JSON error body (a list of
  `{"errorCode", "message", "fields"}`).
- `sf.User` (attribute access) is annotated `SFType | SFBulkHandler | SFBulk2Handler`: only `bulk`/`bulk2` are
  handlers, every other name is an `SFType`; so `sf.bulk2.User` needs the same narrowing.
"""

from __future__ import annotations

from typing import Any, cast

from simple_salesforce import Salesforce, SFType
from simple_salesforce.bulk2 import SFBulk2Handler, SFBulk2Type
from simple_salesforce.exceptions import SalesforceError


def sf_errors(exc: BaseException) -> list[dict[str, Any]]:
    """The error list Salesforce answered with."""
    assert isinstance(exc, SalesforceError), exc
    assert isinstance(exc.content, list), exc.content
    return cast(list[dict[str, Any]], exc.content)


def sobject(sf: Salesforce, name: str) -> SFType:
    """`sf.<name>`, e.g. `sobject(sf, "User").update(...)`."""
    handle = getattr(sf, name)
    assert isinstance(handle, SFType), handle
    return handle


def bulk2_object(sf: Salesforce, name: str) -> SFBulk2Type:
    """`sf.bulk2.<name>`, e.g. `bulk2_object(sf, "User").query(soql)`."""
    handler = sf.bulk2
    assert isinstance(handler, SFBulk2Handler), handler
    return getattr(handler, name)
