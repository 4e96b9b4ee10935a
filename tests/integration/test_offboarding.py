"""Leavers in depth through the real pipeline: sandbox Graph -> (webhook | published event) -> Redis -> revocation
and sync worker subprocesses -> sandbox Salesforce. Records are given to users by direct access to the sandbox org
(the arrange step); everything idsync does goes through its own clients over HTTPS."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.salesforce.records import give_records
from shared.dispatch import publish
from shared.events import EventKind, EventSource, IdentityEvent
from shared.identity_links import IdentityLinks
from shared.offboarding.executor import inflight_key

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin@idsync-sandbox.example.com"
LEADER_BOOK = {"Opportunity": 500, "Lead": 300, "Case": 200, "Account": 50}
DEMO_OBJECTS = ("Opportunity", "Account", "Task", "Lead", "Case")


def _subscribe(stack: Any) -> None:
    from producers.subscriptions import SubscriptionManager
    from shared.graph_client import GraphClient

    settings = stack.settings()
    SubscriptionManager(GraphClient(settings), stack.redis, settings).ensure()


def _org(stack: Any) -> Any:
    return stack.sandbox.state.org


def _calls(stack: Any) -> int:
    return int(_org(stack).api_usage(stack.sandbox.state.clock.time()))


def _owner(stack: Any, record_id: str) -> str:
    found = _org(stack).get(record_id)
    assert found is not None
    return str(found[1]["OwnerId"])


def _leader(stack: Any, skip: int = 0) -> tuple[dict[str, Any], dict[str, Any], str]:
    """An active member (no blocker) with a manager in ManagerId: (Entra user, Salesforce user, manager id)."""
    user, sf_user = stack.active_member_in_salesforce(skip=skip)
    _boss, boss_sf = stack.active_member_in_salesforce(skip=skip + 1)
    _org(stack).update("User", sf_user["Id"], {"ManagerId": boss_sf["Id"]})
    return user, sf_user, boss_sf["Id"]


def _open_and_closed(stack: Any, owner_id: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """What `owner_id` owns now, split by the usual open filters (what the demo contract moves and what it must not)."""
    org = _org(stack)
    opened: dict[str, set[str]] = {}
    closed: dict[str, set[str]] = {}
    with org.lock:
        for sobject in DEMO_OBJECTS + ("Contact",):
            for rec in org.live[sobject].values():
                if rec.get("OwnerId") != owner_id:
                    continue
                shut = bool(rec.get("IsClosed")) if sobject in ("Opportunity", "Case", "Task") else (
                    bool(rec.get("IsConverted")) if sobject == "Lead" else sobject == "Contact")
                (closed if shut else opened).setdefault(sobject, set()).add(rec["Id"])
    return opened, closed


def _transfer_done(stack: Any, entra_id: str) -> dict[str, Any] | None:
    done = [r for r in stack.audit("transfer_ownership", entra_id) if r["outcome"] in ("done", "partial")]
    return done[0] if done else None


def _reassigned(stack: Any, entra_id: str) -> list[str]:
    return [r["detail"]["record_id"] for r in stack.audit("record_transfer", entra_id)]


def test_a_disabled_user_owning_open_records_is_revoked_and_every_open_record_reowned_per_the_demo_contract(
        stack, wait_for) -> None:
    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.start_webhook()
    _subscribe(stack)
    user, sf_user, manager_id = _leader(stack)
    give_records(_org(stack), sf_user["Id"], {"Opportunity": 4, "Account": 2, "Task": 2, "Lead": 3, "Case": 2},
                 {"Opportunity": 2, "Lead": 1, "Case": 1, "Task": 1})
    opened, closed = _open_and_closed(stack, sf_user["Id"])

    started = time.monotonic()
    stack.tenant.disable(user["id"])
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, what="deactivated")
    assert stack.org.frozen(sf_user["Id"])
    transfer = wait_for(lambda: _transfer_done(stack, user["id"]), timeout=30, what="every open record re-owned")
    print(f"disable -> all records placed: {time.monotonic() - started:.2f} s")

    queues = _org(stack).seed_info["queues"]
    expected = {"Opportunity": manager_id, "Account": manager_id, "Task": manager_id, "Lead": queues["Lead_Queue"],
                "Case": queues["Support_Queue"]}
    for sobject in DEMO_OBJECTS:
        assert {_owner(stack, i) for i in opened.get(sobject, set())} <= {expected[sobject]}, sobject
    for ids in closed.values():
        assert {_owner(stack, i) for i in ids} == {sf_user["Id"]}  # closed records (and Contacts) unchanged
    moved = {i for s in DEMO_OBJECTS for i in opened.get(s, set())}
    assert sorted(_reassigned(stack, user["id"])) == sorted(moved)
    assert transfer["outcome"] == "done" and transfer["detail"]["unplaced"] == 0
    revoke = stack.audit("revoke", user["id"])[0]
    assert transfer["correlation_id"] == revoke["correlation_id"]
    assert IdentityLinks(stack.redis).pending_transfers() == []


def test_a_sales_leader_s_book_is_placed_with_at_most_1_1_times_the_minimum_api_calls(stack, wait_for) -> None:
    user, sf_user, manager_id = _leader(stack, skip=2)
    made = give_records(_org(stack), sf_user["Id"], LEADER_BOOK)
    opened, _ = _open_and_closed(stack, sf_user["Id"])
    records = sum(len(ids) for s, ids in opened.items() if s in DEMO_OBJECTS)
    stack.start_worker("revocation")
    stack.tenant.disable(user["id"])
    event = IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA,
                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"])
    started = time.monotonic()
    publish(stack.celery(), event)
    wait_for(lambda: stack.audit("revoke", user["id"]), what="the revocation")
    before = _calls(stack)
    stack.start_worker("sync")
    wait_for(lambda: _transfer_done(stack, user["id"]), timeout=120, what="the leader's records placed")
    elapsed = time.monotonic() - started
    used = _calls(stack) - before

    # The minimum with sObject Collections: one query per configured object + one update call per 200 records of
    # each object.
    per_object = {s: len(opened.get(s, ())) for s in DEMO_OBJECTS}
    minimum = len(DEMO_OBJECTS) + sum(math.ceil(n / 200) for n in per_object.values())
    print(f"sales leader: {records} records placed {elapsed:.2f} s after the event; Salesforce API calls {used} "
          f"(minimum {minimum}, goal <= {1.1 * minimum:.1f})")
    assert used <= 1.1 * minimum
    assert {_owner(stack, i) for i in made["open"]["Opportunity"] + made["open"]["Account"]} == {manager_id}
    queues = _org(stack).seed_info["queues"]
    assert {_owner(stack, i) for i in made["open"]["Lead"]} == {queues["Lead_Queue"]}
    assert {_owner(stack, i) for i in made["open"]["Case"]} == {queues["Support_Queue"]}
    assert len(_reassigned(stack, user["id"])) == records


def test_a_transfer_killed_mid_way_completes_on_redelivery_without_moving_or_auditing_a_record_twice(
        stack, wait_for) -> None:
    stack.env.update({"IDSYNC_VISIBILITY_TIMEOUT_S": "8", "IDSYNC_TASK_TIME_LIMIT_S": "6",
                      "IDSYNC_PARK_THRESHOLD_S": "3", "IDSYNC_BACKOFF_MAX_S": "1"})
    stack.settings()
    user, sf_user, manager_id = _leader(stack, skip=4)
    made = give_records(_org(stack), sf_user["Id"], {"Opportunity": 700, "Account": 100})
    opened, _ = _open_and_closed(stack, sf_user["Id"])
    moving = {i for s in DEMO_OBJECTS for i in opened.get(s, set())}
    stack.start_worker("revocation")
    stack.tenant.disable(user["id"])
    publish(stack.celery(), IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA,
                                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=user["id"]))
    wait_for(lambda: stack.audit("revoke", user["id"]), what="the revocation")
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 1200}})
    stack.start_worker("sync")
    wait_for(lambda: _reassigned(stack, user["id"]), timeout=60, what="the first chunk moved")
    stack.kill("worker-sync", signal.SIGKILL)  # mid-transfer: more chunks to go
    stack.admin("PATCH", "/_sandbox/faults", {"salesforce": {"latency_ms": 0}})
    partly = len(_reassigned(stack, user["id"]))
    assert 0 < partly < len(moving)

    time.sleep(9)  # past the visibility timeout: a worker starting now restores the unacknowledged message
    stack.start_worker("sync", name="worker-sync-restarted")
    wait_for(lambda: _transfer_done(stack, user["id"]), timeout=60, what="the transfer finished after redelivery")
    audited = _reassigned(stack, user["id"])
    assert sorted(audited) == sorted(moving)  # every record audited exactly once (the journal settled the chunk in
    assert len(audited) == len(set(audited))  # flight when the worker died)
    assert {_owner(stack, i) for i in made["open"]["Opportunity"] + made["open"]["Account"]} == {manager_id}
    assert stack.redis.hlen(inflight_key(user["id"])) == 0


def test_a_blocked_deactivation_is_named_and_retried_at_once_after_review_resolve_retry(stack, wait_for) -> None:
    stack.start_worker("revocation")
    stack.start_worker("sync")
    org = _org(stack)
    lead_owner = org.seed_info["default_lead_owner_id"]
    username = org.live["User"][lead_owner]["Username"]
    entra = stack.tenant.user(username)
    if entra["accountEnabled"]:
        stack.tenant.disable(entra["id"])
    publish(stack.celery(), IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.DELTA,
                                          tenant=stack.env["IDSYNC_GRAPH_TENANT_ID"], object_id=entra["id"]))
    item = wait_for(lambda: IdentityLinks(stack.redis).review(entra["id"], "deactivation"), what="the review item")
    assert stack.org.frozen(lead_owner) and stack.org.user(entra["userPrincipalName"])["IsActive"] is True
    assert item["blocker"] == "default_lead_owner" and item["fix"].startswith("Setup > Lead Settings")
    listed = _cli(stack, "review", "list")
    assert item["id"] in listed.stdout and "deactivation_blocked" in listed.stdout

    stack.admin("DELETE", f"/_sandbox/salesforce/users/{lead_owner}/deactivation-blocker")  # the admin's fix
    result = _cli(stack, "review", "resolve", item["id"], "--retry")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: stack.org.user(entra["userPrincipalName"])["IsActive"] is False, what="deactivated on retry")
    wait_for(lambda: IdentityLinks(stack.redis).review(entra["id"], "deactivation") is None, what="item closed")
    assert [r["outcome"] for r in stack.audit("deactivate", entra["id"])] == ["done", "blocked"]


def _cli(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=stack.tmp, env={**_env(stack), "COLUMNS": "250"},
                          capture_output=True, text=True, timeout=60)


def _env(stack: Any) -> dict[str, str]:
    import os

    return {**os.environ, **stack.env}


def test_restore_from_deleted_items_reactivates_and_unfreezes_and_hard_delete_stays_revoked(stack, wait_for) -> None:
    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.start_webhook()
    _subscribe(stack)
    user, sf_user = stack.active_member_in_salesforce(skip=6)
    stack.tenant.delete(user["id"])  # soft delete
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, what="revoked on soft delete")
    assert stack.org.frozen(sf_user["Id"])

    stack.tenant.restore(user["id"])
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is True, what="reactivated on restore")
    wait_for(lambda: not stack.org.frozen(sf_user["Id"]), what="unfrozen on restore")

    stack.tenant.delete(user["id"])
    wait_for(lambda: stack.org.user(user["userPrincipalName"])["IsActive"] is False, what="revoked again")
    stack.tenant.purge(user["id"])  # hard delete: the stored link still finds the Salesforce user
    wait_for(lambda: any(r["detail"].get("entra_status") == "hard_deleted" for r in stack.audit("revoke", user["id"])),
             what="the hard delete handled")
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is False and stack.org.frozen(sf_user["Id"])


def test_leave_of_absence_freezes_only_and_a_return_unfreezes(stack, wait_for, tmp_path) -> None:
    state = stack.sandbox.state
    user, sf_user, _ = _leader(stack, skip=8)
    with state.lock:
        group = next(g for g in state.directory.groups.values()
                     if g["id"] not in state.directory.member_of.get(user["id"], ()))
    stack.tenant.http.post(f"/groups/{group['id']}/members/$ref", json={
        "@odata.id": f"{stack.env['IDSYNC_GRAPH_URL']}/directoryObjects/{user['id']}"}).raise_for_status()
    mapping = (ROOT / "examples" / "mapping.yaml").read_text().replace(
        "  # leave_of_absence:\n  #   groups: [Leave of Absence]",
        f"  leave_of_absence:\n    groups: [\"{group['displayName']}\"]")
    path = tmp_path / "mapping.yaml"
    path.write_text(mapping)
    assert "leave_of_absence:\n" in mapping
    stack.env["IDSYNC_MAPPING_FILE"] = str(path)
    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.start_webhook()
    _subscribe(stack)
    give_records(_org(stack), sf_user["Id"], {"Opportunity": 3})
    opened, _ = _open_and_closed(stack, sf_user["Id"])

    stack.tenant.disable(user["id"])
    wait_for(lambda: stack.org.frozen(sf_user["Id"]), what="frozen")
    [revoke] = wait_for(lambda: stack.audit("revoke", user["id"]), what="the revocation audited")
    assert revoke["outcome"] == "frozen_leave_of_absence"
    assert stack.org.user(user["userPrincipalName"])["IsActive"] is True  # licence kept
    assert {_owner(stack, i) for i in opened["Opportunity"]} == {sf_user["Id"]}  # nothing reassigned
    assert stack.audit("transfer_ownership", user["id"]) == []

    stack.tenant.enable(user["id"])
    wait_for(lambda: not stack.org.frozen(sf_user["Id"]), what="unfrozen on return")


def test_idsync_offboard_dry_run_shows_the_plan_and_the_real_run_executes_it(stack, wait_for) -> None:
    user, sf_user, manager_id = _leader(stack, skip=10)
    made = give_records(_org(stack), sf_user["Id"], {"Opportunity": 3, "Lead": 2})
    preview = _cli(stack, "offboard", user["userPrincipalName"], "--dry-run", "--json")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.lstrip().startswith("{"), preview.stdout[:500] + preview.stderr[-500:]
    plan = json.loads(preview.stdout)
    assert plan["preview"] is True and plan["mode"] == "offboard"  # enabled: what disabling would do
    to = {m["id"]: m["to"] for m in plan["moves"]}
    assert {to[i] for i in made["open"]["Opportunity"]} == {manager_id}
    assert {to[i] for i in made["open"]["Lead"]} == {_org(stack).seed_info["queues"]["Lead_Queue"]}
    assert {_owner(stack, i) for i in made["open"]["Opportunity"]} == {sf_user["Id"]}  # nothing changed

    refused = _cli(stack, "offboard", user["userPrincipalName"])
    assert refused.returncode == 1 and "is enabled in Entra" in refused.stderr

    stack.start_worker("revocation")
    stack.start_worker("sync")
    stack.tenant.disable(user["id"])
    done = _cli(stack, "offboard", user["userPrincipalName"], "--json", "--wait", "45")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["transfer_ownership"]["outcome"] == "done"
    assert {_owner(stack, i) for i in made["open"]["Opportunity"]} == {manager_id}
    text = _cli(stack, "offboard", user["userPrincipalName"], "--dry-run")
    assert text.returncode == 0 and "already inactive" in text.stdout
