"""The sandbox org over real HTTPS: OAuth, the request guard (sessions, limits, faults) and sObject CRUD, driven by
the unmodified simple-salesforce client the product uses."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.salesforce.oauth import sign_assertion
from sandbox.server import SandboxServer
from tests.sandbox.simple_salesforce_typed import sf_errors


def _token(sandbox: SandboxServer, http: httpx.Client) -> str:
    c = sandbox.state.creds
    r = http.post("/services/oauth2/token", data={"grant_type": "client_credentials"},
                  auth=(c.sf_client_id, c.sf_client_secret))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def http(sandbox: SandboxServer, ssl_ctx: ssl.SSLContext) -> Iterator[httpx.Client]:
    """Like conftest's, but `Connection: close`: an idle keep-alive TLS connection delays the server's stop."""
    with httpx.Client(base_url=sandbox.base_url, verify=ssl_ctx, trust_env=False, timeout=20,
                      headers={"Connection": "close"}) as client:
        yield client


@pytest.fixture
def session(sandbox: SandboxServer) -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(sandbox.state.ca_path)
    s.headers["Connection"] = "close"
    yield s
    s.close()


@pytest.fixture
def sf(sandbox: SandboxServer, http: httpx.Client, session: requests.Session) -> Salesforce:
    return Salesforce(instance_url=sandbox.base_url, session_id=_token(sandbox, http), session=session)


def user_body(sandbox: SandboxServer, **over: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    body = {
        "Username": f"u{tag}@example.com", "LastName": "Tester", "FirstName": "Ada", "Email": f"u{tag}@example.com",
        "Alias": "atest", "TimeZoneSidKey": "Europe/London", "LocaleSidKey": "en_GB", "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "en_US", "ProfileId": sandbox.state.org.seed_info["profiles"]["Standard User"],
    }
    body.update(over)
    return body


# ------------------------------------------------------------------------------------------------ OAuth
def test_client_credentials_via_basic_auth_returns_a_bearer_session_for_the_my_domain(sandbox, http):
    c = sandbox.state.creds
    r = http.post("/services/oauth2/token", data={"grant_type": "client_credentials"},
                  auth=(c.sf_client_id, c.sf_client_secret))
    body = r.json()
    assert r.status_code == 200
    assert body["token_type"] == "Bearer" and body["instance_url"] == sandbox.base_url
    assert body["access_token"].startswith("00D") and "!" in body["access_token"]
    assert body["id"].endswith("/" + sandbox.state.org.integration_user_id)
    assert body["issued_at"].isdigit() and body["scope"] == "api" and body["signature"]


def test_client_credentials_via_form_fields_are_accepted(sandbox, http):
    c = sandbox.state.creds
    r = http.post("/services/oauth2/token", data={"grant_type": "client_credentials", "client_id": c.sf_client_id,
                                                 "client_secret": c.sf_client_secret})
    assert r.status_code == 200 and r.json()["access_token"]


def test_wrong_client_secret_is_invalid_client(sandbox, http):
    r = http.post("/services/oauth2/token", data={"grant_type": "client_credentials"},
                  auth=(sandbox.state.creds.sf_client_id, "nope"))
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_client", "error_description": "invalid client credentials"}


def test_jwt_bearer_with_the_connected_app_key_issues_a_session_for_the_subject(sandbox, http):
    org = sandbox.state.org
    username = org.live["User"][org.seed_info["admin_user_id"]]["Username"]
    r = http.post("/services/oauth2/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                 "assertion": sign_assertion(sandbox.state, username,
                                                                             aud="https://login.salesforce.com")})
    assert r.status_code == 200, r.text
    assert r.json()["id"].endswith("/" + org.seed_info["admin_user_id"])


def test_jwt_bearer_with_a_foreign_audience_is_rejected_as_audience_is_invalid(sandbox, http):
    org = sandbox.state.org
    username = org.live["User"][org.seed_info["admin_user_id"]]["Username"]
    r = http.post("/services/oauth2/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                 "assertion": sign_assertion(sandbox.state, username,
                                                                             aud="https://evil.example.com")})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": "audience is invalid"}


# ------------------------------------------------------------------------------------------------ guard
def test_missing_authorization_header_is_401_invalid_auth_header(http):
    r = http.get("/services/data/v62.0/limits")
    assert r.status_code == 401 and r.json()[0]["errorCode"] == "INVALID_AUTH_HEADER"


def test_unsupported_api_version_is_404_not_found(sandbox, http):
    r = http.get("/services/data/v58.0/limits", headers={"Authorization": f"Bearer {_token(sandbox, http)}"})
    assert r.status_code == 404
    assert r.json()[0] == {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist",
                           "fields": []}


def test_a_path_no_resource_serves_is_404_not_found_not_a_server_error(sandbox, http):
    r = http.get("/services/data/v62.0/no/such/resource", headers={"Authorization": f"Bearer {_token(sandbox, http)}"})
    assert r.status_code == 404
    assert r.json()[0] == {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist",
                           "fields": []}


def test_a_resource_asked_with_a_method_it_does_not_take_is_405_method_not_allowed(sandbox, http):
    r = http.put("/services/data/v62.0/limits", headers={"Authorization": f"Bearer {_token(sandbox, http)}"})
    assert r.status_code == 405
    assert r.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"
    assert "'PUT' not allowed" in r.json()[0]["message"]


def test_every_data_response_carries_sforce_limit_info_which_simple_salesforce_reads(sf):
    sf.restful("limits")
    usage = sf.api_usage["api-usage"]
    assert usage.used >= 1 and usage.total == 100_000


def test_limits_reports_daily_api_requests_in_the_rolling_window(sf):
    limits = sf.limits()
    assert limits["DailyApiRequests"]["Max"] == 100_000
    assert 0 < limits["DailyApiRequests"]["Remaining"] < 100_000
    assert "DailyBulkApiBatches" in limits and "DailyBulkV2QueryJobs" in limits


def test_session_expired_on_the_sandbox_clock_is_401_with_a_json_list_body(sandbox, sf):
    sandbox.state.clock.advance(sandbox.state.config.get("salesforce.session_lifetime_s") + 1)
    with pytest.raises(SalesforceExpiredSession) as info:
        sf.restful("limits")
    assert info.value.status == 401
    assert info.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_exceeding_the_daily_api_limit_is_403_request_limit_exceeded(sandbox, sf):
    cfg = sandbox.state.config
    used = sandbox.state.org.api_usage(sandbox.state.clock.time())
    cfg.set("salesforce.daily_api_limit", used + 1)
    try:
        sf.restful("limits")
        with pytest.raises(SalesforceRefusedRequest) as info:
            sf.restful("limits")
    finally:
        cfg.set("salesforce.daily_api_limit", 100_000)
    assert sf_errors(info.value)[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert sf_errors(info.value)[0]["message"] == "TotalRequests Limit exceeded."


@pytest.fixture
def faults(sandbox: SandboxServer) -> Iterator[Any]:
    yield sandbox.state.faults
    sandbox.state.faults.patch({"salesforce": {"error_rate": 0.0, "error_kinds": ["503"], "timeout_hold_s": 35}})


def test_injected_503_fault_surfaces_as_server_unavailable(sf, faults):
    faults.patch({"salesforce": {"error_rate": 1.0, "error_kinds": ["503"]}})
    with pytest.raises(SalesforceGeneralError) as info:
        sf.restful("limits")
    assert info.value.status == 503 and sf_errors(info.value)[0]["errorCode"] == "SERVER_UNAVAILABLE"


def test_injected_unable_to_lock_row_fault_is_a_400_with_that_error_code(sf, faults):
    faults.patch({"salesforce": {"error_rate": 1.0, "error_kinds": ["UNABLE_TO_LOCK_ROW"]}})
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.restful("limits")
    assert sf_errors(info.value)[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    assert sf_errors(info.value)[0]["message"].startswith("unable to obtain exclusive access to this record")


def test_injected_reset_fault_drops_the_connection_without_a_response(sf, faults):
    faults.patch({"salesforce": {"error_rate": 1.0, "error_kinds": ["reset"]}})
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.restful("limits")


def test_injected_timeout_fault_holds_the_request_past_the_client_timeout(sf, faults):
    faults.patch({"salesforce": {"error_rate": 1.0, "error_kinds": ["timeout"], "timeout_hold_s": 5}})
    with pytest.raises(requests.exceptions.ReadTimeout):
        sf.restful("limits", timeout=0.3)


# ------------------------------------------------------------------------------------------------ sObjects
def test_user_create_returns_201_id_and_update_returns_204(sandbox, sf):
    created = sf.User.create(user_body(sandbox))
    assert created["success"] is True and created["errors"] == [] and created["id"].startswith("005")
    assert len(created["id"]) == 18
    assert sf.User.update(created["id"], {"Title": "Engineer"}) == 204
    got = sf.User.get(created["id"])
    assert got["Title"] == "Engineer" and got["Name"] == "Ada Tester"
    assert got["attributes"]["type"] == "User"


def test_created_user_gets_a_user_login_and_its_profile_permission_set_assignment(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    login = sf.query(f"SELECT Id, IsFrozen FROM UserLogin WHERE UserId = '{uid}'")
    assert login["totalSize"] == 1 and login["records"][0]["IsFrozen"] is False
    psa = sf.query(f"SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = '{uid}' "
                   "AND PermissionSet.IsOwnedByProfile = true")
    assert psa["totalSize"] == 1


def test_describe_lists_fields_with_types_lengths_and_relationships(sf):
    d = sf.User.describe()
    fields = {f["name"]: f for f in d["fields"]}
    assert d["keyPrefix"] == "005"
    assert fields["Alias"]["length"] == 8 and fields["Alias"]["type"] == "string"
    assert fields["ProfileId"]["referenceTo"] == ["Profile"] and fields["ProfileId"]["relationshipName"] == "Profile"
    assert fields["Username"]["unique"] is True and fields["Name"]["createable"] is False


def test_unknown_object_is_404_not_found(sf):
    with pytest.raises(SalesforceResourceNotFound) as info:
        sf.restful("sobjects/NoSuchThing__c/describe")
    assert sf_errors(info.value)[0]["errorCode"] == "NOT_FOUND"


def test_unknown_field_in_body_is_400_invalid_field(sandbox, sf):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, Shoe_Size__c=42))
    assert sf_errors(info.value)[0]["errorCode"] == "INVALID_FIELD"
    assert sf_errors(info.value)[0]["message"] == "No such column 'Shoe_Size__c' on sobject of type User"


def test_read_only_field_in_body_is_400_invalid_field_for_insert_update(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.update(uid, {"Name": "Someone Else"})
    assert sf_errors(info.value)[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert sf_errors(info.value)[0]["fields"] == ["Name"]


def test_missing_record_is_404_not_found(sf):
    with pytest.raises(SalesforceResourceNotFound) as info:
        sf.User.get("005000000000000AAA")
    assert sf_errors(info.value)[0]["errorCode"] == "NOT_FOUND"


def test_users_cannot_be_deleted(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.delete(uid)
    assert sf_errors(info.value)[0]["errorCode"] == "DELETE_FAILED"
    assert sf.User.get(uid)["Id"] == uid


def test_upsert_by_external_id_creates_then_updates(sf):
    key = uuid.uuid4().hex
    assert sf.Identity_Audit__c.upsert(f"Correlation_Id__c/{key}", {"Action__c": "Create"}) == 201
    assert sf.Identity_Audit__c.upsert(f"Correlation_Id__c/{key}", {"Outcome__c": "Success"}) == 200
    rec = sf.Identity_Audit__c.get_by_custom_id("Correlation_Id__c", key)
    assert rec["Action__c"] == "Create" and rec["Outcome__c"] == "Success"


def test_account_delete_moves_it_to_the_recycle_bin_visible_to_query_all(sf):
    aid = sf.Account.create({"Name": "Short Lived"})["id"]
    assert sf.Account.delete(aid) == 204
    assert sf.query(f"SELECT Id FROM Account WHERE Id = '{aid}'")["totalSize"] == 0
    assert sf.query_all(f"SELECT Id, IsDeleted FROM Account WHERE Id = '{aid}'", include_deleted=True)[
        "records"][0]["IsDeleted"] is True
