"""Salesforce's write rules as the sandbox org enforces them (codes and messages the product classifies on)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.salesforce.api import SalesforceApiError
from sandbox.server import SandboxServer
from tests.sandbox.simple_salesforce_typed import sf_errors


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
    yield Salesforce(instance_url=sandbox.base_url, session_id=token, session=s)
    s.close()


def user_body(sandbox: SandboxServer, **over: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    body = {
        "Username": f"r{tag}@example.com", "LastName": "Rules", "Email": f"r{tag}@example.com", "Alias": "rules",
        "TimeZoneSidKey": "America/New_York", "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "en_US", "ProfileId": sandbox.state.org.seed_info["profiles"]["Standard User"],
    }
    body.update(over)
    return body


def error_of(excinfo: pytest.ExceptionInfo[SalesforceMalformedRequest]) -> dict[str, Any]:
    return sf_errors(excinfo.value)[0]


def test_missing_required_user_fields_are_listed_in_required_field_missing(sandbox, sf):
    body = user_body(sandbox)
    del body["LastName"], body["Alias"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(body)
    err = error_of(info)
    assert err["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert err["message"] == "Required fields are missing: [LastName, Alias]"
    assert err["fields"] == ["LastName", "Alias"]


def test_alias_longer_than_eight_characters_is_string_too_long(sandbox, sf):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, Alias="abcdefghi"))
    assert error_of(info)["errorCode"] == "STRING_TOO_LONG"
    assert error_of(info)["message"] == "Alias: data value too large: abcdefghi (max length=8)"


def test_username_must_be_email_shaped(sandbox, sf):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, Username="not-an-email"))
    assert error_of(info)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert "Username must be in the form of an email address" in error_of(info)["message"]


def test_duplicate_username_in_this_org_is_duplicate_username(sandbox, sf):
    body = user_body(sandbox)
    sf.User.create(body)
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, Username=body["Username"].upper()))
    assert error_of(info)["errorCode"] == "DUPLICATE_USERNAME"
    assert error_of(info)["message"].startswith("Duplicate Username.<br>The username already exists in this or "
                                                "another Salesforce organization.")


def test_username_taken_in_another_org_is_duplicate_username(sandbox, sf):
    taken = sandbox.state.config.get("salesforce.other_org_usernames")[0]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, Username=taken))
    assert error_of(info)["errorCode"] == "DUPLICATE_USERNAME"


def test_duplicate_federation_identifier_is_duplicate_value(sandbox, sf):
    fid = f"fid-{uuid.uuid4().hex}@example.com"
    sf.User.create(user_body(sandbox, FederationIdentifier=fid))
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, FederationIdentifier=fid))
    assert error_of(info)["errorCode"] == "DUPLICATE_VALUE"
    assert error_of(info)["message"].startswith("This Federation ID is already in use")


def test_unknown_time_zone_is_invalid_or_null_for_restricted_picklist(sandbox, sf):
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, TimeZoneSidKey="Mars/Olympus_Mons"))
    assert error_of(info)["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def test_profile_id_of_another_object_type_is_malformed_id(sandbox, sf):
    account_id = sf.Account.create({"Name": "Not a profile"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.create(user_body(sandbox, ProfileId=account_id))
    assert error_of(info)["errorCode"] == "MALFORMED_ID"


def test_creating_an_active_user_beyond_the_licence_seats_is_license_limit_exceeded(sandbox, sf):
    org = sandbox.state.org
    chatter = org.seed_info["licenses"]["Chatter Free"]
    used = org.used_licenses(chatter)
    org.set_total_licenses("Chatter Free", used + 1)
    profile = org.seed_info["profiles"]["Chatter Free User"]
    try:
        sf.User.create(user_body(sandbox, ProfileId=profile))
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.User.create(user_body(sandbox, ProfileId=profile))
        assert error_of(info) == {"message": "License Limit Exceeded", "errorCode": "LICENSE_LIMIT_EXCEEDED",
                                  "fields": []}
    finally:
        org.set_total_licenses("Chatter Free", 5000)


def test_deactivation_frees_a_seat_and_reactivation_needs_one(sandbox, sf):
    org = sandbox.state.org
    chatter = org.seed_info["licenses"]["Chatter Free"]
    profile = org.seed_info["profiles"]["Chatter Free User"]
    uid = sf.User.create(user_body(sandbox, ProfileId=profile))["id"]
    org.set_total_licenses("Chatter Free", org.used_licenses(chatter))
    try:
        sf.User.update(uid, {"IsActive": False})
        other = sf.User.create(user_body(sandbox, ProfileId=profile))["id"]
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.User.update(uid, {"IsActive": True})
        assert error_of(info)["errorCode"] == "LICENSE_LIMIT_EXCEEDED"
        assert sf.User.get(other)["IsActive"] is True
    finally:
        org.set_total_licenses("Chatter Free", 5000)


def test_deactivating_the_default_lead_owner_is_field_integrity_exception(sandbox, sf):
    uid = sandbox.state.org.seed_info["default_lead_owner_id"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.update(uid, {"IsActive": False})
    assert error_of(info)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert error_of(info)["message"] == "You cannot deactivate a user who is the default owner of leads"
    assert sf.User.get(uid)["IsActive"] is True


def test_deactivation_blocker_set_through_the_org_can_be_cleared(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    sandbox.state.org.set_deactivation_blocker(uid, "default_workflow_user")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.User.update(uid, {"IsActive": False})
    assert error_of(info)["message"] == "You cannot deactivate the Default Workflow User"
    sandbox.state.org.set_deactivation_blocker(uid, None)
    assert sf.User.update(uid, {"IsActive": False}) == 204


def test_user_login_can_be_frozen_and_password_lock_only_cleared(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    login_id = sf.query(f"SELECT Id FROM UserLogin WHERE UserId = '{uid}'")["records"][0]["Id"]
    assert sf.UserLogin.update(login_id, {"IsFrozen": True}) == 204
    assert sf.query(f"SELECT IsFrozen FROM UserLogin WHERE Id = '{login_id}'")["records"][0]["IsFrozen"] is True
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.UserLogin.update(login_id, {"IsPasswordLocked": True})
    assert error_of(info)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"


def test_duplicate_permission_set_assignment_is_duplicate_value(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    ps = sandbox.state.org.seed_info["permission_sets"]["Marketing_User"]
    sf.PermissionSetAssignment.create({"AssigneeId": uid, "PermissionSetId": ps})
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.PermissionSetAssignment.create({"AssigneeId": uid, "PermissionSetId": ps})
    assert error_of(info)["errorCode"] == "DUPLICATE_VALUE"
    assert error_of(info)["message"] == f"Duplicate PermissionSetAssignment. Assignee: {uid}; Permission Set: {ps}"


def test_profile_owned_permission_set_assignment_cannot_be_deleted(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    psa = sf.query(f"SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = '{uid}' "
                   "AND PermissionSet.IsOwnedByProfile = true")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.PermissionSetAssignment.delete(psa)
    assert error_of(info)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert "associated with a profile" in error_of(info)["message"]


def test_permission_set_needing_a_licence_requires_the_permission_set_licence(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    info_ = sandbox.state.org.seed_info
    ps = info_["permission_sets"]["Sales_Cloud_User"]
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.PermissionSetAssignment.create({"AssigneeId": uid, "PermissionSetId": ps})
    assert error_of(info)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    sf.PermissionSetLicenseAssign.create({"AssigneeId": uid,
                                          "PermissionSetLicenseId": info_["licenses"]["Sales Cloud User PSL"]})
    assert sf.PermissionSetAssignment.create({"AssigneeId": uid, "PermissionSetId": ps})["success"] is True


def test_queue_can_own_a_lead_but_not_an_account(sandbox, sf):
    queue = sandbox.state.org.seed_info["queues"]["Lead_Queue"]
    lead = sf.Lead.create({"LastName": "Queued", "Company": "Q Co", "OwnerId": queue})
    assert sf.Lead.get(lead["id"])["OwnerId"] == queue
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Name": "Queue owned?", "OwnerId": queue})
    assert error_of(info)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert error_of(info)["fields"] == ["OwnerId"]


def test_queue_without_a_queue_sobject_row_cannot_own_the_object(sandbox, sf):
    queue = sandbox.state.org.seed_info["queues"]["Lead_Queue"]  # Lead only, not Case
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Case.create({"Subject": "Wrong queue", "OwnerId": queue})
    assert error_of(info)["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_inactive_user_cannot_be_made_owner_of_a_contact(sandbox, sf):
    uid = sf.User.create(user_body(sandbox))["id"]
    sf.User.update(uid, {"IsActive": False})
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.create({"LastName": "Orphan", "OwnerId": uid})
    assert error_of(info)["errorCode"] == "INACTIVE_OWNER_OR_USER"
    assert uid in error_of(info)["message"]


def test_computed_closed_flags_follow_stage_and_status(sf):
    opp = sf.Opportunity.create({"Name": "Calc", "StageName": "Prospecting", "CloseDate": "2027-01-31"})["id"]
    assert sf.Opportunity.get(opp)["IsClosed"] is False
    sf.Opportunity.update(opp, {"StageName": "Closed Won"})
    got = sf.Opportunity.get(opp)
    assert got["IsClosed"] is True and got["IsWon"] is True
    case = sf.Case.create({"Subject": "Calc", "Status": "Closed"})["id"]
    assert sf.Case.get(case)["IsClosed"] is True


def test_the_last_active_system_administrator_cannot_be_deactivated(sandbox):
    org = sandbox.state.org
    admins = [u["Id"] for u in org.live["User"].values()
              if u["IsActive"] and u["ProfileId"] == org.seed_info["profiles"]["System Administrator"]]
    standard = org.seed_info["profiles"]["Standard User"]
    with org.transaction() as txn:
        for uid in admins[1:]:
            org.update("User", uid, {"ProfileId": standard})
        with pytest.raises(SalesforceApiError) as info:
            org.update("User", admins[0], {"IsActive": False})
        org.rollback(txn)
    assert info.value.error_code == "CANNOT_DISABLE_LAST_ADMIN"
    assert all(org.live["User"][a]["ProfileId"] == org.seed_info["profiles"]["System Administrator"] for a in admins)


def test_a_configured_validation_rule_refuses_matching_saves_with_its_message(sandbox, sf):
    from sandbox.admin import apply_patch
    from sandbox.config import DEFAULT_CONFIG

    rule = {"object": "Contact", "field": "Email", "pattern": r"@competitor\.example$", "name": "No_Competitors",
            "message": "Contacts from competitors are not allowed"}
    apply_patch(sandbox.state.config, DEFAULT_CONFIG, {"salesforce": {"validation_rules": [rule]}})
    try:
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.Contact.create({"LastName": "Rival", "Email": "spy@competitor.example"})
        err = error_of(info)
        assert err["errorCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        assert err["message"] == "Contacts from competitors are not allowed" and err["fields"] == ["Email"]
        ok = sf.Contact.create({"LastName": "Friend", "Email": "pal@friends.example"})
        with pytest.raises(SalesforceMalformedRequest):  # updates are checked too
            sf.Contact.update(ok["id"], {"Email": "pal@competitor.example"})
    finally:
        apply_patch(sandbox.state.config, DEFAULT_CONFIG, {"salesforce": {"validation_rules": None}})


def test_a_malformed_validation_rule_is_rejected_with_its_position():
    from sandbox.admin import validate_patch
    from sandbox.config import DEFAULT_CONFIG

    with pytest.raises(ValueError, match=r"validation_rules\[0\] needs exactly one of pattern or blank"):
        validate_patch(DEFAULT_CONFIG, {"salesforce": {"validation_rules": [
            {"object": "Contact", "field": "Email", "message": "m"}]}})
