"""Issue 11, Done-when 1 and 2 (the reverse flow): an Approved `User_Provisioning_Request__c` becomes an Entra
account through the real pipeline: Salesforce (sandbox REST) -> `idsync request-poller` process -> Redis ->
`sync.provision_request` in a `python -m ops worker` process -> Graph -> the answer written back to Salesforce.

The workers and the poller run a copy of the demo mapping with a one-second poll interval. Each test uses names
of its own: the module shares one sandbox.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _mapping(stack: Any) -> Path:
    path = stack.tmp / "mapping.yaml"
    shutil.copy(ROOT / "examples" / "mapping.yaml", path)
    text = path.read_text().replace("  poll_interval_s: 5\n", "  poll_interval_s: 1\n  lookback_s: 2\n")
    assert "poll_interval_s: 1" in text
    path.write_text(text)
    return path


def _run(stack: Any, *, poller: bool = True, sync_concurrency: int = 1) -> None:
    stack.env["IDSYNC_MAPPING_FILE"] = str(_mapping(stack))
    stack.start_worker("sync", concurrency=sync_concurrency)
    if poller:
        stack.start("request-poller", "request-poller")


def _name() -> tuple[str, str]:
    return "Test", f"Person{uuid.uuid4().hex[:6].title()}"


def _request(stack: Any, **fields: Any) -> str:
    first, last = _name()
    values = {"Name": f"New hire {last}", "Request_Type__c": "Create", "Status__c": "Approved",
              "First_Name__c": first, "Last_Name__c": last, "Entra_Groups__c": "All Employees"}
    values.update(fields)
    return stack.org.insert_request(**{k: v for k, v in values.items() if v is not None})


def _finished(stack: Any, request_id: str) -> dict[str, Any] | None:
    record = stack.org.request(request_id)
    return record if record["Status__c"] in ("Completed", "Failed") else None


def _entra_users(stack: Any, upn_prefix: str) -> list[dict[str, Any]]:
    state = stack.sandbox.state
    with state.lock:
        return [dict(u) for u in state.directory.users.values()
                if str(u.get("userPrincipalName") or "").lower().startswith(upn_prefix.lower())]


def _tasks_for(stack: Any, request_id: str) -> list[dict[str, Any]]:
    soql = f"SELECT Id, Subject, OwnerId, Priority, Description FROM Task WHERE WhatId = '{request_id}'"
    return list(stack.org.sf.query_all(soql)["records"])


def test_an_approved_request_creates_a_member_in_its_groups_and_is_completed(stack, wait_for):
    _run(stack)
    manager, _ = stack.active_member_in_salesforce()
    request_id = _request(stack, Department__c="Finance", Job_Title__c="Analyst",
                          Manager_UPN__c=manager["userPrincipalName"], Entra_Groups__c="All Employees;Customer Support")

    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Completed", done["Error__c"]
    assert done["Completed_At__c"] and not done["Error__c"]
    upn = done["Requested_For__c"]
    domain = stack.sandbox.state.directory.verified_domains[-1]
    assert upn.endswith(f"@{domain}") and upn.startswith("test.person")
    state = stack.sandbox.state
    with state.lock:
        user = dict(state.directory.users[done["Entra_Id__c"]])
        groups = {state.directory.groups[g]["displayName"] for g in state.directory.member_of.get(user["id"], ())}
        manager_id = state.directory.manager_of(user["id"])
        password = state.directory.passwords[user["id"]]
    assert (user["userPrincipalName"], user["accountEnabled"], user["userType"]) == (upn, True, "Member")
    assert (user["department"], user["jobTitle"], user["usageLocation"]) == ("Finance", "Analyst", "US")
    assert user["onPremisesExtensionAttributes"] == {"extensionAttribute15": request_id}
    assert password["forceChangePasswordNextSignIn"] is True and len(password["password"]) >= 20
    assert groups == {"All Employees", "Customer Support"} and manager_id == manager["id"]
    assert [r["outcome"] for r in stack.audit("reverse_flow_create", user["id"])] == ["completed"]


def test_a_request_with_an_unknown_group_fails_readably_with_a_task_for_the_requester(stack, wait_for):
    _run(stack)
    request_id = _request(stack, Entra_Groups__c="All Employees;Ghost Team")

    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Failed"
    assert done["Error__c"] == "unknown Entra group 'Ghost Team' (Entra_Groups__c)"
    assert not done["Entra_Id__c"]
    (task,) = _tasks_for(stack, request_id)
    assert task["OwnerId"] == done["CreatedById"] and task["Priority"] == "High"
    assert task["Subject"].startswith("idsync:") and "Ghost Team" in task["Description"]
    assert not _entra_users(stack, f"test.{done['Last_Name__c']}")  # nothing half-made in Entra


def test_a_group_outside_allowed_groups_fails_the_request(stack, wait_for):
    _run(stack)
    request_id = _request(stack, Entra_Groups__c="Engineering")  # exists in the tenant, not requestable
    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Failed"
    assert done["Error__c"] == "Entra group 'Engineering' may not be requested (not in requests.allowed_groups)"


def test_a_request_seen_twice_makes_one_entra_user(stack, wait_for):
    _run(stack, sync_concurrency=2)
    stack.start("beat", "beat")  # brings back the duplicates parked while the first delivery held the request
    celery = stack.celery()
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 100}})
    request_id = _request(stack)
    event = IdentityEvent(kind=EventKind.REQUEST_APPROVED, source=EventSource.OPERATOR,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=request_id)
    for _ in range(3):  # besides the poller's own event: duplicates at the same moment, on two worker processes
        publish(celery, event)

    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Completed", done["Error__c"]
    wait_for(lambda: stack.redis.llen("sync") == 0 and stack.redis.zcard("idsync:parked") == 0
             and stack.redis.hlen("unacked") == 0, timeout=60, what="every duplicate handled")
    marked = [u for u in _entra_users(stack, "test.")
              if (u.get("onPremisesExtensionAttributes") or {}).get("extensionAttribute15") == request_id]
    assert [u["id"] for u in marked] == [done["Entra_Id__c"]]


def test_a_worker_that_died_after_creating_the_user_is_continued_not_repeated(stack, wait_for):
    """The Entra user exists (marked with the request) and the request is In Progress: an earlier attempt created
    the user and died before the write-back. The next delivery adopts that user."""
    _run(stack, poller=False)
    first, last = _name()
    request_id = _request(stack, First_Name__c=first, Last_Name__c=last, Status__c="In Progress")
    domain = stack.sandbox.state.directory.verified_domains[-1]
    upn = f"{first}.{last}@{domain}".lower()
    stack.tenant.http.post("/users", json={
        "accountEnabled": True, "displayName": f"{first} {last}", "mailNickname": upn.split("@")[0],
        "userPrincipalName": upn, "passwordProfile": {"password": "Earlier-Attempt-1!"},
        "onPremisesExtensionAttributes": {"extensionAttribute15": request_id}}).raise_for_status()
    existing = _entra_users(stack, upn)
    publish(stack.celery(), IdentityEvent(kind=EventKind.REQUEST_APPROVED, source=EventSource.OPERATOR,
                                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=request_id))

    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Completed" and done["Entra_Id__c"] == existing[0]["id"]
    assert len(_entra_users(stack, upn.split("@")[0])) == 1


def test_error_outcomes_taken_upn_graph_refusal_and_numbered_upns(stack, wait_for):
    _run(stack)
    taken, _ = stack.active_member_in_salesforce()
    by_name = _request(stack, Requested_For__c=taken["userPrincipalName"])
    refused = _request(stack, Department__c="D" * 70)  # Entra holds 64 characters: Graph answers 400
    first, last = _name()
    twins = [_request(stack, First_Name__c=first, Last_Name__c=last) for _ in range(2)]

    done = {rid: wait_for(lambda rid=rid: _finished(stack, rid), timeout=30, what=f"request {rid}")
            for rid in (by_name, refused, *twins)}
    assert done[by_name]["Status__c"] == "Failed"
    assert done[by_name]["Error__c"] == (f"the UPN {taken['userPrincipalName'].lower()} is taken in Entra "
                                         "(Requested_For__c)")
    assert done[refused]["Status__c"] == "Failed"
    assert done[refused]["Error__c"].startswith("Entra refused the new user test.person")
    assert "400 Request_BadRequest: Invalid value specified for property 'department'" in done[refused]["Error__c"]
    assert len(_tasks_for(stack, refused)) == 1
    local = f"{first}.{last}".lower()
    assert sorted(done[rid]["Requested_For__c"].split("@")[0] for rid in twins) == [local, f"{local}2"]


def test_graph_throttling_an_invitation_is_retried_then_succeeds(stack, wait_for):
    _run(stack)
    stack.admin("PATCH", "/_sandbox/faults", {"graph": {"throttle_rate": 1.0, "throttle_paths": ["/invitations"],
                                                        "throttle_retry_after_s": 3}})
    email = f"inv.{uuid.uuid4().hex[:6]}@partner.example.org"
    request_id = _request(stack, Request_Type__c="Invite", Email__c=email, First_Name__c="Ivy", Last_Name__c="Vine",
                          Entra_Groups__c=None)

    wait_for(lambda: b'"error_class": "GraphThrottled"' in stack.log("worker-sync"), timeout=30,
             what="the invitation answered 429 and the task scheduled a retry")
    stack.admin("PATCH", "/_sandbox/faults", {"graph": {"throttle_rate": 0.0}})
    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Completed", done["Error__c"]
    state = stack.sandbox.state
    with state.lock:
        guest = dict(state.directory.users[done["Entra_Id__c"]])
    assert (guest["userType"], guest["mail"], guest["externalUserState"]) == ("Guest", email, "PendingAcceptance")


def test_round_trip_request_to_entra_user_to_exactly_one_salesforce_user(stack, wait_for):
    """The new Entra user flows back through provisioning (change notification -> webhook -> sync lane) and is
    created in Salesforce once, linked to the Entra user the request names. Needs the sync lane's provisioning
    (issue 7's `sync_users`)."""
    _run(stack)
    stack.start_worker("revocation")
    stack.start_webhook()
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings()
    SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()
    request_id = _request(stack, Job_Title__c="Account Executive")

    done = wait_for(lambda: _finished(stack, request_id), timeout=30, what="the request finished")
    assert done["Status__c"] == "Completed", done["Error__c"]
    upn = done["Requested_For__c"]
    sf_user = wait_for(lambda: stack.org.user(upn), timeout=30, what="the Salesforce user")
    rows = stack.org.sf.query_all(f"SELECT Id, Entra_Object_Id__c FROM User WHERE Username = '{upn}' OR "
                                  f"Entra_Object_Id__c = '{done['Entra_Id__c']}'")["records"]
    assert [r["Id"] for r in rows] == [sf_user["Id"]]
    assert rows[0]["Entra_Object_Id__c"] == done["Entra_Id__c"]
    from shared.identity_links import IdentityLinks

    link = IdentityLinks(stack.redis).get_link(done["Entra_Id__c"])
    assert link is not None and link.sf_user_id == sf_user["Id"]
