"""SOQL query resources over real HTTPS, driven by simple-salesforce exactly as the worker drives them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.salesforce.org import make_id
from sandbox.server import SandboxServer
from tests.sandbox.simple_salesforce_typed import sf_errors

pytestmark = pytest.mark.integration

BULK_ROWS = 100_000


def _token(sandbox: SandboxServer, http: httpx.Client) -> str:
    creds = sandbox.state.creds
    resp = http.post("/services/oauth2/token", data={"grant_type": "client_credentials"},
                     auth=(creds.sf_client_id, creds.sf_client_secret))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


@pytest.fixture
def sf(sandbox: SandboxServer, http: httpx.Client) -> Iterator[Salesforce]:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(sandbox.state.ca_path)
    yield Salesforce(instance_url=sandbox.base_url, session_id=_token(sandbox, http), session=session, version="59.0")
    session.close()


@pytest.fixture
def batch_cap(sandbox: SandboxServer) -> Iterator[Any]:
    """Lets a test lower the server-side page size; restores the default afterwards."""
    config = sandbox.state.config
    before = config.get("salesforce.query_batch_size")
    yield lambda n: config.set("salesforce.query_batch_size", n)
    config.set("salesforce.query_batch_size", before)


def _accounts(sandbox: SandboxServer, prefix: str, n: int, start: int) -> list[str]:
    """Store `n` complete Account rows straight in the org (the seed path), named `{prefix}-{i}`."""
    org = sandbox.state.org
    fields = list(org.schema["Account"].fields)
    now = org.now_str()
    rows = []
    for i in range(n):
        rec: dict[str, Any] = dict.fromkeys(fields)
        rec.update(Id=make_id(org.schema["Account"].key_prefix, start + i), Name=f"{prefix}-{i:06d}", IsDeleted=False,
                   CreatedDate=now, LastModifiedDate=now, SystemModstamp=now, OwnerId=org.integration_user_id)
        rows.append(rec)
    with sandbox.state.lock:
        org.bulk_load("Account", rows)
    return [r["Id"] for r in rows]


def test_query_all_follows_next_records_url_across_several_pages(sf: Salesforce, batch_cap: Any) -> None:
    total = sf.query("SELECT COUNT() FROM User")["totalSize"]
    assert total > 14
    batch_cap(7)
    first = sf.query("SELECT Id, Username, Profile.Name FROM User ORDER BY Username")
    assert first["done"] is False and len(first["records"]) == 7 and first["totalSize"] == total
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-7")
    everything = sf.query_all("SELECT Id, Username, Profile.Name FROM User ORDER BY Username")
    assert everything["totalSize"] == total == len(everything["records"])
    names = [r["Username"] for r in everything["records"]]
    assert names == sorted(names, key=str.lower) and len(set(names)) == total
    rec = everything["records"][0]
    assert rec["attributes"]["type"] == "User"
    assert rec["Profile"] is None or rec["Profile"]["attributes"]["type"] == "Profile"


def test_batch_size_header_is_honoured_within_salesforce_range(sandbox: SandboxServer, sf: Salesforce) -> None:
    _accounts(sandbox, "paged", 450, start=20_000_000)
    soql = "SELECT Id, Name FROM Account WHERE Name LIKE 'paged-%'"
    page = sf.query(soql, headers={"Sforce-Query-Options": "batchSize=200"})
    assert (len(page["records"]), page["done"], page["totalSize"]) == (200, False, 450)
    clamped = sf.query(soql, headers={"Sforce-Query-Options": "batchSize=5"})  # below the minimum: 200
    assert len(clamped["records"]) == 200
    second = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    third = sf.query_more(second["nextRecordsUrl"], identifier_is_url=True)
    assert (len(second["records"]), len(third["records"]), third["done"]) == (200, 50, True)
    assert "nextRecordsUrl" not in third
    ids = [r["Id"] for r in page["records"] + second["records"] + third["records"]]
    assert len(set(ids)) == 450
    default = sf.query(soql)
    assert default["done"] is True and len(default["records"]) == 450


def test_query_all_resource_includes_deleted_records(sandbox: SandboxServer, sf: Salesforce) -> None:
    org = sandbox.state.org
    kept, gone = _accounts(sandbox, "recycle", 2, start=30_000_000)
    with sandbox.state.lock:
        org.remove("Account", gone)
    soql = "SELECT Id, Name, IsDeleted FROM Account WHERE Name LIKE 'recycle-%' ORDER BY Name"
    live = sf.query_all(soql)
    assert [r["Id"] for r in live["records"]] == [kept]
    everything = sf.query_all(soql, include_deleted=True)
    assert [(r["Id"], r["IsDeleted"]) for r in everything["records"]] == [(kept, False), (gone, True)]


def test_bad_soql_raises_malformed_request_with_salesforce_error_codes(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query("SELECT Id FROM User WHERE")
    assert info.value.status == 400
    assert sf_errors(info.value)[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query("SELECT Foo FROM User")
    assert sf_errors(info.value)[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Foo' on entity 'User'" in sf_errors(info.value)[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query_all("SELECT Id FROM NoSuchThing")
    assert sf_errors(info.value)[0]["errorCode"] == "INVALID_TYPE"


def test_missing_query_string_is_malformed(sandbox: SandboxServer, http: httpx.Client) -> None:
    resp = http.get("/services/data/v62.0/query", headers={"Authorization": f"Bearer {_token(sandbox, http)}"})
    assert resp.status_code == 400
    assert resp.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_count_query_returns_total_size_and_no_records(sf: Salesforce) -> None:
    result = sf.query("SELECT COUNT() FROM User WHERE IsActive = true")
    assert result["done"] is True and result["records"] == []
    assert result["totalSize"] == len(sf.query_all("SELECT Id FROM User WHERE IsActive = true")["records"])


def test_relationship_filter_on_permission_set_assignments(sf: Salesforce) -> None:
    rows = sf.query_all(
        "SELECT Id, AssigneeId, PermissionSet.Name, PermissionSet.IsOwnedByProfile FROM PermissionSetAssignment "
        "WHERE PermissionSet.IsOwnedByProfile = false"
    )["records"]
    assert all(r["PermissionSet"]["IsOwnedByProfile"] is False for r in rows)
    owned = sf.query("SELECT COUNT() FROM PermissionSetAssignment WHERE PermissionSet.IsOwnedByProfile = true")
    groups = sf.query("SELECT COUNT() FROM PermissionSetAssignment WHERE PermissionSetId = null")  # group rows
    everything = sf.query("SELECT COUNT() FROM PermissionSetAssignment")
    assert owned["totalSize"] > 0 and rows
    assert owned["totalSize"] + len(rows) + groups["totalSize"] == everything["totalSize"]


def test_unknown_or_expired_locator_is_invalid_query_locator(
    sandbox: SandboxServer, sf: Salesforce, batch_cap: Any
) -> None:
    batch_cap(3)
    first = sf.query("SELECT Id FROM User")
    assert first["done"] is False
    again = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert len(again["records"]) == 3
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query_more("01g000000000000AAA-3")
    assert sf_errors(info.value)[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    sandbox.state.clock.advance(15 * 60 + 5)  # cursors die after 15 idle minutes on the sandbox clock
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert sf_errors(info.value)[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_hundred_thousand_rows_come_back_through_query_all_in_pages_of_2000(
    sandbox: SandboxServer, sf: Salesforce
) -> None:
    ids = _accounts(sandbox, "bulk", BULK_ROWS, start=40_000_000)
    counters = sandbox.state.activity.counters
    before = counters["sf_request"]
    result = sf.query_all("SELECT Id, Name, Owner.IsActive FROM Account WHERE Name LIKE 'bulk-%'")
    assert result["totalSize"] == BULK_ROWS == len(result["records"])
    assert {r["Id"] for r in result["records"]} == set(ids)
    assert counters["sf_request"] - before == BULK_ROWS // 2000
