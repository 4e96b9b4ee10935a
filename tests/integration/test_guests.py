"""Issue 11, Done-when 1 and 2 (guests, enrichment): B2B guests become Contacts under their company's Account through
the real pipeline: Graph (sandbox, HTTPS) -> change notification -> webhook -> revocation.check_user (guests are
handed to `sync.contact_changed`) -> Salesforce. Deletions come back through the revocation lane's follow-up.

Real parts: the sandbox, a private redis-server, `python -m ops worker` processes for both lanes, the webhook. The
demo mapping (examples/mapping.yaml) is the one the workers run. Each test invites guests of its own domain: the
module shares one sandbox.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.identity_links import IdentityLinks

pytestmark = pytest.mark.integration


def _subscribe(stack: Any) -> None:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings()
    SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()


def _pipeline(stack: Any, sync_concurrency: int = 1) -> None:
    stack.start_worker("revocation")
    stack.start_worker("sync", concurrency=sync_concurrency)
    stack.start_webhook()
    _subscribe(stack)


def _domain() -> str:
    return f"new{uuid.uuid4().hex[:8]}.example.com"


def _contact(stack: Any, email: str) -> dict[str, Any] | None:
    rows = stack.org.contacts(email)
    return rows[0] if rows else None


def _accounts_with_domain(stack: Any, domain: str) -> list[dict[str, Any]]:
    soql = f"SELECT Id, Name, Email_Domain__c, Type FROM Account WHERE Email_Domain__c = '{domain}'"
    return list(stack.org.sf.query_all(soql)["records"])


def _account_count(stack: Any) -> int:
    return int(stack.org.sf.query("SELECT COUNT() FROM Account")["totalSize"])


def test_two_guests_of_one_new_domain_at_the_same_moment_make_one_account_and_two_contacts(stack, wait_for):
    _pipeline(stack, sync_concurrency=2)
    # Salesforce answers slowly, so both guests' find-or-create windows overlap.
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 150}})
    domain = _domain()
    emails = [f"ana@{domain}", f"ben@{domain}"]
    invited = [stack.tenant.invite(email, name) for email, name in zip(emails, ("Ana Lima", "Ben Okafor"),
                                                                         strict=True)]

    contacts = wait_for(lambda: all(_contact(stack, e) for e in emails) and [_contact(stack, e) for e in emails],
                        timeout=30, what="both Contacts")
    accounts = _accounts_with_domain(stack, domain)
    assert len(accounts) == 1, accounts
    assert {c["AccountId"] for c in contacts} == {accounts[0]["Id"]}
    assert accounts[0]["Type"] == "Partner"
    ids = {c["Entra_Object_Id__c"] for c in contacts}
    assert ids == {i["invitedUser"]["id"] for i in invited}
    assert {c["Invitation_State__c"] for c in contacts} == {"PendingAcceptance"}
    assert [r["outcome"] for r in stack.audit("account_create")] == ["done"]


def test_a_public_domain_guest_lands_under_the_catch_all_without_a_new_account(stack, wait_for):
    _pipeline(stack)
    before = _account_count(stack)
    email = f"guest.{uuid.uuid4().hex[:6]}@gmail.com"
    stack.tenant.invite(email, "Gail Mail")

    contact = wait_for(lambda: _contact(stack, email), timeout=30, what="the Contact")
    assert contact["Account"]["Name"] == "Individual Guests"
    assert _account_count(stack) == before
    assert not _accounts_with_domain(stack, "gmail.com")


def test_a_redeemed_invitation_updates_the_contact_and_a_deleted_guest_leaves_it_inactive(stack, wait_for):
    _pipeline(stack)
    email = f"cara@{_domain()}"
    guest_id = stack.tenant.invite(email, "Cara Silva")["invitedUser"]["id"]
    created = wait_for(lambda: _contact(stack, email), timeout=30, what="the Contact")
    assert (created["Invitation_State__c"], created["Entra_Status__c"]) == ("PendingAcceptance", "Active")

    stack.admin("POST", f"/_sandbox/graph/invitations/{guest_id}/accept")
    wait_for(lambda: (_contact(stack, email) or {}).get("Invitation_State__c") == "Accepted", timeout=30,
             what="the Contact showing the redeemed invitation")

    stack.tenant.delete(guest_id)
    inactive = wait_for(lambda: (c := _contact(stack, email)) and c["Entra_Status__c"] == "Inactive" and c,
                        timeout=30, what="the Contact marked inactive")
    assert inactive["Id"] == created["Id"]  # the same record: never deleted, never recreated
    assert [r["outcome"] for r in stack.audit("contact_inactive", guest_id)] == ["done"]


def test_enrichment_follows_a_department_change_and_a_managers_rename_reaches_the_reports_contact(stack, wait_for):
    _pipeline(stack)
    email = f"dora@{_domain()}"
    guest_id = stack.tenant.invite(email, "Dora Weber")["invitedUser"]["id"]
    wait_for(lambda: _contact(stack, email), timeout=30, what="the Contact")

    stack.tenant.update(guest_id, department="Alliances", employeeOrgData={"costCenter": "CC-77"})
    contact = wait_for(lambda: (c := _contact_full(stack, email)) and c["Department"] == "Alliances" and c,
                       timeout=30, what="the Contact's Department")
    assert contact["Cost_Center__c"] == "CC-77"

    # The guest's sponsor in Entra becomes their manager; then the manager is renamed.
    manager, _sf_user = stack.active_member_in_salesforce(skip=3)
    stack.tenant.http.put(f"/users/{guest_id}/manager/$ref",
                          json={"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{manager['id']}"}
                          ).raise_for_status()
    wait_for(lambda: (_contact_full(stack, email) or {}).get("Manager_Name__c") == manager["displayName"],
             timeout=30, what="the manager's name on the Contact")
    stack.tenant.update(manager["id"], displayName="Renamed Manager")
    # A member's event reaches the CRM through the sync lane's hook (workers.guests.contact_follow_ups).
    from shared.events import EventKind, EventSource, IdentityEvent
    from workers.guests import contact_follow_ups

    event = IdentityEvent(kind=EventKind.USER_CHANGED, source=EventSource.WORKER,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=manager["id"])
    assert contact_follow_ups(stack.celery(), stack.redis, event, [manager["id"]]) == [manager["id"]]
    final = wait_for(lambda: (c := _contact_full(stack, email)) and c["Manager_Name__c"] == "Renamed Manager" and c,
                     timeout=30, what="the report's Contact showing the renamed manager")
    assert final["Manager_Chain__c"].startswith("Renamed Manager")


def _contact_full(stack: Any, email: str) -> dict[str, Any] | None:
    soql = ("SELECT Id, Department, Cost_Center__c, Manager_Name__c, Manager_Email__c, Manager_Chain__c FROM Contact "
            f"WHERE Email = '{email}'")
    rows = stack.org.sf.query_all(soql)["records"]
    return rows[0] if rows else None


def test_a_contact_validation_rule_becomes_a_review_item_with_the_rules_message(stack, wait_for):
    _pipeline(stack)
    domain = _domain()
    rule = {"object": "Contact", "field": "Email", "pattern": rf"@{domain.replace('.', '[.]')}$",
            "name": "No_Competitors", "message": "Contacts from competitors need the sales director's approval"}
    stack.admin("PATCH", "/_sandbox/config", {"salesforce": {"validation_rules": [rule]}})
    email = f"eve@{domain}"
    guest_id = stack.tenant.invite(email, "Eve Spy")["invitedUser"]["id"]

    review = wait_for(lambda: IdentityLinks(stack.redis).get_review(guest_id), timeout=30, what="the review item")
    assert review["reason"] == "contact_rejected" and review["code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "sales director's approval" in review["detail"]
    assert _contact(stack, email) is None
    (rejected,) = [r for r in stack.audit("contact_sync", guest_id) if r["outcome"] == "rejected"]
    assert rejected["detail"]["code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"

    # Once the admin lifts the rule, the next event for the guest creates the Contact and closes the item.
    stack.admin("PATCH", "/_sandbox/config", {"salesforce": {"validation_rules": None}})
    stack.tenant.update(guest_id, jobTitle="Analyst")
    wait_for(lambda: _contact(stack, email), timeout=30, what="the Contact after the rule was lifted")
    wait_for(lambda: IdentityLinks(stack.redis).get_review(guest_id) is None, timeout=10,
             what="the review item closed")
