"""Composite, sObject Collections and Bulk API 2.0 against the sandbox org through simple-salesforce."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.server import SandboxServer


@pytest.fixture
def sf(sandbox: SandboxServer) -> Iterator[Salesforce]:
    """simple-salesforce in direct mode; `Connection: close` so no idle TLS connection delays the server's stop."""
    c = sandbox.state.creds
    s = requests.Session()
    s.trust_env = False
    s.verify = str(sandbox.state.ca_path)
    s.headers["Connection"] = "close"
    token = s.post(f"{sandbox.base_url}/services/oauth2/token", data={"grant_type": "client_credentials"},
                   auth=(c.sf_client_id, c.sf_client_secret)).json()["access_token"]
    yield Salesforce(instance_url=sandbox.base_url, session_id=token, session=s, version="62.0")
    s.close()


def user_record(sandbox: SandboxServer, **over: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    rec = {
        "attributes": {"type": "User"},
        "Username": f"c{tag}@example.com", "LastName": "Composite", "Email": f"c{tag}@example.com", "Alias": "comp",
        "TimeZoneSidKey": "Europe/Berlin", "LocaleSidKey": "de_DE", "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "de", "ProfileId": sandbox.state.org.seed_info["profiles"]["Standard User"],
    }
    rec.update(over)
    return rec


def test_collections_create_reports_per_record_results_with_status_code_errors(sandbox, sf):
    good = user_record(sandbox)
    bad = user_record(sandbox, Alias="waytoolongalias")
    result = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [good, bad]})
    assert result[0]["success"] is True and result[0]["id"].startswith("005")
    assert result[1]["success"] is False
    assert result[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert "errorCode" not in result[1]["errors"][0]


def test_collections_all_or_none_rolls_back_the_good_records(sandbox, sf):
    good = user_record(sandbox)
    bad = user_record(sandbox, LastName=None)
    result = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": [good, bad]})
    assert result[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert result[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.query(f"SELECT Id FROM User WHERE Username = '{good['Username']}'")["totalSize"] == 0


def test_collections_mixing_setup_and_non_setup_objects_is_mixed_dml(sandbox, sf):
    records = [user_record(sandbox), {"attributes": {"type": "Account"}, "Name": "Mixed DML Inc"}]
    result = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert result[0]["success"] is True
    assert result[1]["errors"][0]["statusCode"] == "MIXED_DML_OPERATION"
    assert "DML operation on setup object is not permitted" in result[1]["errors"][0]["message"]


def test_collections_update_and_delete_report_each_id(sf):
    ids = [sf.Account.create({"Name": f"Batch {i}"})["id"] for i in range(2)]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Account"}, "id": ids[0], "Industry": "Banking"},
        {"attributes": {"type": "Account"}, "id": ids[1], "NoSuchField": 1},
    ]})
    assert updated[0] == {"id": ids[0], "success": True, "errors": []}
    assert updated[1]["id"] == ids[1] and updated[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids)})
    assert [d["success"] for d in deleted] == [True, True]


def test_composite_resolves_references_between_subrequests(sf):
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "acct",
         "body": {"Name": "Ref Parent"}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "ct",
         "body": {"LastName": "Child", "AccountId": "@{acct.id}"}},
        {"method": "GET", "url": "/services/data/v62.0/query?q=SELECT+Id,AccountId+FROM+Contact+WHERE+Id='@{ct.id}'",
         "referenceId": "q"},
    ]}
    out = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert [r["httpStatusCode"] for r in out] == [201, 201, 200]
    assert out[2]["body"]["records"][0]["AccountId"] == out[0]["body"]["id"]


def test_composite_all_or_none_failure_rolls_back_and_halts_the_rest(sf):
    name = f"Rolled back {uuid.uuid4().hex[:8]}"
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "a1", "body": {"Name": name}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "c1",
         "body": {"FirstName": "No last name"}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "a2", "body": {"Name": "x"}},
    ]}
    out = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert out[1]["httpStatusCode"] == 400 and out[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert out[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert out[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert sf.query(f"SELECT Id FROM Account WHERE Name = '{name}'")["totalSize"] == 0


def test_composite_reference_to_a_failed_subrequest_is_processing_halted(sf):
    body = {"allOrNone": False, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "bad", "body": {}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "ct",
         "body": {"LastName": "Child", "AccountId": "@{bad.id}"}},
    ]}
    out = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert out[1]["httpStatusCode"] == 400
    assert out[1]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert "Invalid reference specified" in out[1]["body"][0]["message"]


def test_composite_with_more_than_25_subrequests_is_rejected(sf):
    subs = [{"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": f"r{i}"} for i in range(26)]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.restful("composite", method="POST", json={"compositeRequest": subs})
    assert info.value.status == 400


def test_composite_counts_as_a_single_api_call(sandbox, sf):
    org = sandbox.state.org
    before = org.api_usage(sandbox.state.clock.time())
    subs = [{"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": f"r{i}"} for i in range(3)]
    sf.restful("composite", method="POST", json={"compositeRequest": subs})
    assert org.api_usage(sandbox.state.clock.time()) == before + 1


def test_bulk2_update_of_users_through_simple_salesforce_completes(sandbox, sf):
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST",
                                       json={"records": [user_record(sandbox) for _ in range(3)]})]
    result = sf.bulk2.User.update(records=[{"Id": i, "Department": "Bulk Dept"} for i in ids], wait=0.05)
    assert result[0]["numberRecordsProcessed"] == 3 and result[0]["numberRecordsFailed"] == 0
    got = sf.query(f"SELECT Department FROM User WHERE Id IN ('{ids[0]}','{ids[1]}','{ids[2]}')")
    assert {r["Department"] for r in got["records"]} == {"Bulk Dept"}
    ok = sf.bulk2.User.get_successful_records(result[0]["job_id"])
    assert ok.splitlines()[0].startswith("sf__Id,sf__Created,")


def test_bulk2_insert_reports_failed_rows_with_sf_error(sf):
    result = sf.bulk2.Account.insert(records=[{"Name": "Bulk Good"}, {"Name": "", "Industry": "Banking"}], wait=0.05)
    assert result[0]["numberRecordsFailed"] == 1
    failed = sf.bulk2.Account.get_failed_records(result[0]["job_id"])
    assert "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]" in failed
