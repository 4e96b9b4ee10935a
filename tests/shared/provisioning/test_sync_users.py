"""`sync_users` against the real sandbox (Graph and Salesforce over HTTPS, a real redis-server): joiners, movers,
fields, late managers, leavers by scope, matching reviews, and each Salesforce error outcome.

Each test creates its own Entra users the way an admin would (Graph), tells idsync what changed the way the
group-change task does (`members_changed`), runs one batch, and looks at Salesforce the way a Salesforce admin would.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from sandbox.admin_clients import GraphAdmin, OrgAdmin
from shared.delta_keys import delta_key, tenant_of
from shared.dirty_users import DirtyUsers
from shared.engine import PlanAction
from shared.errors import SERVICE_SALESFORCE, PermanentError
from shared.group_membership import GroupMembership
from shared.provisioning.batch import BatchReport, SyncDeps, sync_users
from shared.provisioning.group_events import members_changed
from shared.provisioning.review_decisions import ReviewDecisions
from shared.salesforce_bulk import BulkIngest

_names = (f"user{n:03d}" for n in itertools.count(1))


@pytest.fixture
def tenant(sandbox: Any) -> GraphAdmin:
    return GraphAdmin(sandbox.env())


@pytest.fixture
def org(sandbox: Any) -> OrgAdmin:
    return OrgAdmin(sandbox.env())


def _groups_changed(deps: SyncDeps, tenant: GraphAdmin, *names: str) -> set[str]:
    """What `sync.group_changed` does for each group: read the snapshot again; returns who joined or left."""
    changed: set[str] = set()
    for name in names:
        changed |= members_changed(deps.graph, deps.redis, deps.mappings.current(), tenant.group(name)["id"]).users
    return changed


def _joiner(tenant: GraphAdmin, deps: SyncDeps, groups: list[str], **attributes: Any) -> dict[str, Any]:
    name = next(_names)
    upn = f"{name}@{tenant.verified_domain()}"
    defaults = {"jobTitle": "Account Executive", "department": "Sales", "mobilePhone": "+1 206 555 0100",
                "employeeId": f"E9{name[-3:]}00", "usageLocation": "US"}
    created = tenant.create_user("Test", name.capitalize(), upn, **{**defaults, **attributes})
    for group in groups:
        tenant.add_to_group(created["id"], group)
    sync_users(deps, [], dry_run=True)  # the mapping's snapshots are read once (first batch)
    _groups_changed(deps, tenant, *groups)
    return created


def _run(deps: SyncDeps, *ids: str) -> BatchReport:
    report = sync_users(deps, list(ids))
    assert report.retry == []
    return report


def test_a_joiner_in_sales_team_west_gets_the_demo_contract(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees", "Sales Team West"])
    report = _run(deps, user["id"])

    assert report.outcomes[user["id"]] == "created"
    view = org.view(user["userPrincipalName"])
    assert view is not None and view["IsActive"] is True
    assert (view["Profile"], view["Role"]) == ("Sales User", "Account Executive West")
    assert view["PermissionSets"] == ["Sales_Cloud_User"] and view["Groups"] == ["All_Sales"]
    assert (view["Title"], view["Department"], view["MobilePhone"]) == ("Account Executive", "Sales",
                                                                        "+1 206 555 0100")
    assert view["FederationIdentifier"] == user["userPrincipalName"] == view["Username"]
    licences = org.sf.query_all(f"SELECT PermissionSetLicenseId FROM PermissionSetLicenseAssign WHERE AssigneeId = "
                                f"'{report.results[user['id']].sf_user_id}'")["records"]
    assert len(licences) == 1  # Sales_Cloud_User needs the Sales Cloud licence: assigned with it


def test_a_mover_changes_profile_role_entitlements_and_keeps_what_an_admin_assigned_by_hand(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees", "Sales Team West"])
    _run(deps, user["id"])
    org.assign_permission_set(user["userPrincipalName"], "API_Only")

    tenant.remove_from_group(user["id"], "Sales Team West")
    tenant.add_to_group(user["id"], "Customer Support")
    assert _groups_changed(deps, tenant, "Sales Team West", "Customer Support") == {user["id"]}
    report = _run(deps, user["id"])

    view = org.view(user["userPrincipalName"])
    assert (view["Profile"], view["Role"]) == ("Standard User", "Support Agent")
    assert view["PermissionSets"] == ["API_Only", "Service_Cloud_User"]
    assert view["Groups"] == ["Support_Queue", "Support_Team"]
    assert report.plans[user["id"]].unmanaged == ("ps:API_Only",)
    licences = org.sf.query_all("SELECT Id FROM PermissionSetLicenseAssign WHERE AssigneeId = "
                                f"'{report.results[user['id']].sf_user_id}'")["records"]
    assert licences == []  # idsync granted the licence, and no mapped permission set needs it any more


def test_attribute_changes_and_an_emptied_attribute_reach_salesforce(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees"])
    _run(deps, user["id"])
    tenant.update(user["id"], {"jobTitle": "Sales Manager", "department": "Sales Leadership", "mobilePhone": None})
    report = _run(deps, user["id"])

    view = org.view(user["userPrincipalName"])
    assert (view["Title"], view["Department"], view["MobilePhone"]) == ("Sales Manager", "Sales Leadership", None)
    changed = {c.target: (c.before, c.after) for c in report.plans[user["id"]].changes}
    assert changed == {"Title": ("Account Executive", "Sales Manager"),
                       "Department": ("Sales", "Sales Leadership"), "MobilePhone": ("+1 206 555 0100", None)}


def test_a_manager_provisioned_after_their_report_is_filled_in_then(deps, tenant, org, redis_client):
    manager = _joiner(tenant, deps, [])  # not in scope yet: not provisioned
    report_user = _joiner(tenant, deps, ["All Employees"])
    tenant.set_manager(report_user["id"], manager["id"])
    first = _run(deps, report_user["id"])
    assert first.plans[report_user["id"]].waiting_for_manager == manager["id"]
    assert org.view(report_user["userPrincipalName"])["Manager"] is None

    tenant.add_to_group(manager["id"], "All Employees")
    _groups_changed(deps, tenant, "All Employees")
    _run(deps, manager["id"])
    backlog = [c.entra_id for c in DirtyUsers(redis_client).claim(500, lease_s=60)]
    assert report_user["id"] in backlog  # late binding: the report is planned again, no restart needed
    _run(deps, report_user["id"])
    assert org.view(report_user["userPrincipalName"])["Manager"] == manager["userPrincipalName"]


def test_a_manager_created_in_the_same_batch_is_bound_in_that_batch(deps, tenant, org):
    manager = _joiner(tenant, deps, ["All Employees"])
    report_user = _joiner(tenant, deps, ["All Employees"])
    tenant.set_manager(report_user["id"], manager["id"])
    _run(deps, report_user["id"], manager["id"])
    assert org.view(report_user["userPrincipalName"])["Manager"] == manager["userPrincipalName"]


def test_nested_group_membership_counts(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees", "Account Executives"])
    # nest "Account Executives" inside "Sales Team East": its members are Sales Team East members transitively
    east, aes = tenant.group("Sales Team East"), tenant.group("Account Executives")
    tenant.http.post(f"/groups/{east['id']}/members/$ref",
                     json={"@odata.id": f"{tenant.http.base_url}/directoryObjects/{aes['id']}"}).raise_for_status()
    try:
        # Graph notifies a change of Sales Team East (a group was added): its members now include the user
        assert user["id"] in _groups_changed(deps, tenant, "Sales Team East")
        _run(deps, user["id"])
        view = org.view(user["userPrincipalName"])
        assert (view["Profile"], view["Role"]) == ("Sales User", "Account Executive East")
        assert view["PermissionSetGroups"] == ["Sales_Bundle"]
    finally:
        tenant.http.delete(f"/groups/{east['id']}/members/{aes['id']}/$ref").raise_for_status()
        _groups_changed(deps, tenant, "Sales Team East")


def test_a_linked_user_leaving_scope_is_sent_to_the_revocation_lane(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees"])
    _run(deps, user["id"])
    tenant.remove_from_group(user["id"], "All Employees")
    assert _groups_changed(deps, tenant, "All Employees") == {user["id"]}
    report = _run(deps, user["id"])

    assert report.plans[user["id"]].action is PlanAction.DEPROVISION
    assert ("revocation.deprovision_user", user["id"]) in [(name, msg["object_id"]) for name, msg in
                                                            deps.sender.tasks]
    assert org.view(user["userPrincipalName"])["IsActive"] is True  # the revocation lane acts, after a live check


def test_a_user_deprovisioned_for_leaving_scope_stays_off_when_they_change_again_in_entra(deps, tenant, org):
    """Only a user back in scope is turned back on: a later attribute change of an out-of-scope leaver idsync
    deactivated is no reason to reactivate them."""
    import time

    from shared.identity_links import IdentityLinks

    user = _joiner(tenant, deps, ["All Employees"])
    report = _run(deps, user["id"])
    tenant.remove_from_group(user["id"], "All Employees")
    _groups_changed(deps, tenant, "All Employees")
    IdentityLinks(deps.redis).set_tombstone(user["id"], time.time())  # what the revocation lane does...
    deps.sf.deactivate_user(report.results[user["id"]].sf_user_id)  # ...then it deactivates
    tenant.update(user["id"], jobTitle="Left, then renamed")

    again = _run(deps, user["id"])

    assert again.plans[user["id"]].action is PlanAction.NOOP
    assert org.view(user["userPrincipalName"])["IsActive"] is False


def test_a_disabled_user_is_handed_to_the_revocation_lane_and_not_created(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees"])
    tenant.disable(user["id"])
    report = _run(deps, user["id"])
    assert report.outcomes[user["id"]] == "not_in_entra" or report.outcomes[user["id"]] == "handed_to_revocation"
    assert org.view(user["userPrincipalName"]) is None


def test_two_possible_salesforce_users_make_a_review_item_and_nothing_is_written(deps, tenant, org, redis_client):
    user = _joiner(tenant, deps, ["All Employees"], employeeId="E777777")
    profile = org.sf.query_all("SELECT Id FROM Profile WHERE Name = 'Standard User'")["records"][0]["Id"]
    for n in (1, 2):  # two records an earlier system left, each matching by Email AND EmployeeNumber
        org.sf.User.create({"Username": f"legacy{n}.{user['id'][:8]}@legacy.example.com", "LastName": "Legacy",
                            "Email": user["userPrincipalName"], "EmployeeNumber": "E777777", "Alias": f"leg{n}",
                            "TimeZoneSidKey": "GMT", "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
                            "LanguageLocaleKey": "en_US", "ProfileId": profile})
    report = _run(deps, user["id"])

    assert report.plans[user["id"]].action is PlanAction.REVIEW
    assert org.view(user["userPrincipalName"]) is None
    [item] = [i for i in deps_links(deps).list_reviews() if i["entra_id"] == user["id"]]
    assert item["code"] == "match_several" and len(item["candidates"]) == 2
    assert "mapping.yaml:" in (item.get("where") or "")

    ReviewDecisions(redis_client).force_create(user["id"])  # `idsync review resolve ID --create`
    deps_links(deps).resolve_review(item["entra_id"], item["topic"])
    assert _run(deps, user["id"]).outcomes[user["id"]] == "created"
    assert org.view(user["userPrincipalName"]) is not None


def deps_links(deps: SyncDeps) -> Any:
    from shared.identity_links import IdentityLinks

    return IdentityLinks(deps.redis)


def test_a_username_taken_in_another_org_takes_the_next_candidate(deps, tenant, org, sandbox):
    user = _joiner(tenant, deps, ["All Employees"])
    sandbox.state.config.patch({"salesforce": {"other_org_usernames": [user["userPrincipalName"]]}})
    try:
        report = _run(deps, user["id"])
    finally:
        sandbox.state.config.patch({"salesforce": {"other_org_usernames": []}})
    assert report.outcomes[user["id"]] == "created"
    local, domain = user["userPrincipalName"].split("@")
    assert org.user(f"{local}.2@{domain}") is not None  # the mapping's duplicate format: local.N@domain


def test_no_free_licence_is_a_review_item_and_the_user_is_retried_later(deps, tenant, org, sandbox, redis_client):
    user = _joiner(tenant, deps, ["All Employees"])
    org_state = sandbox.state.org
    with sandbox.state.lock:
        used = org_state.used_licenses(org_state.seed_info["licenses"]["Salesforce"])
    sandbox.state.org.set_total_licenses("Salesforce", used)
    try:
        report = _run(deps, user["id"])
        assert report.outcomes[user["id"]] == "review"
        [item] = [i for i in deps_links(deps).list_reviews() if i["entra_id"] == user["id"]]
        assert item["code"] == "LICENSE_LIMIT_EXCEEDED" and item["topic"] == "sync:licence"
        assert redis_client.zscore("idsync:sync:licence_blocked", user["id"]) is not None
    finally:
        sandbox.state.org.set_total_licenses("Salesforce", used + 1000)
    assert _run(deps, user["id"]).outcomes[user["id"]] == "created"  # a seat is free: the retry succeeds
    assert redis_client.zscore("idsync:sync:licence_blocked", user["id"]) is None
    assert [i for i in deps_links(deps).list_reviews() if i["entra_id"] == user["id"]] == []  # closed itself


def test_a_value_longer_than_the_field_is_cut_to_its_length(deps, tenant, org):
    user = _joiner(tenant, deps, ["All Employees"])
    _run(deps, user["id"])
    tenant.update(user["id"], {"mobilePhone": "+1 206 555 0100 ext. 1234567890 1234567890 1234567890"})
    report = _run(deps, user["id"])
    assert report.outcomes[user["id"]] == "updated"
    assert org.view(user["userPrincipalName"])["MobilePhone"] == "+1 206 555 0100 ext. 1234567890 123456789"[:40]


def test_a_value_salesforce_refuses_is_a_review_item_naming_the_user_the_field_and_the_mapping_line(
    deps, tenant, org
):
    user = _joiner(tenant, deps, ["All Employees"])
    _run(deps, user["id"])
    tenant.update(user["id"], {"mail": "not an address", "jobTitle": "Sales Manager"})
    tenant.add_to_group(user["id"], "Marketing")
    _groups_changed(deps, tenant, "Marketing")
    report = _run(deps, user["id"])

    assert report.outcomes[user["id"]] == "review"
    [item] = [i for i in deps_links(deps).list_reviews() if i["entra_id"] == user["id"]]
    assert item["upn"] == user["userPrincipalName"] and "Email" in item["topic"]
    assert item["code"] == "INVALID_EMAIL_ADDRESS" and "mapping.yaml:" in item["where"]
    view = org.view(user["userPrincipalName"])
    assert view["Title"] == "Account Executive"  # the User update is one write: refused as a whole
    assert view["PermissionSets"] == ["Marketing_User"]  # the rest of the plan still applied
    tenant.update(user["id"], {"mail": user["userPrincipalName"]})  # fixed in Entra: the review closes itself
    _run(deps, user["id"])
    assert [i for i in deps_links(deps).list_reviews() if i["entra_id"] == user["id"]] == []
    assert org.view(user["userPrincipalName"])["Title"] == "Sales Manager"


def _bulk(deps: SyncDeps, threshold: int) -> SyncDeps:
    return dataclasses.replace(deps, settings=deps.settings.model_copy(update={"bulk_write_threshold": threshold}))


def _ingest_jobs(sandbox: Any) -> int:
    return sum(1 for i in sandbox.state.activity.recent("sf_request", limit=500)
               if i["method"] == "POST" and str(i["path"]).endswith("/jobs/ingest"))


def test_a_batch_changing_more_users_than_the_bulk_threshold_updates_them_through_one_bulk_job(
    deps, tenant, org, sandbox
):
    users = [_joiner(tenant, deps, ["All Employees"]) for _ in range(3)]
    _run(deps, *(u["id"] for u in users))
    for n, user in enumerate(users):
        tenant.update(user["id"], {"jobTitle": f"Regional Lead {n}", "mobilePhone": None})
    jobs = _ingest_jobs(sandbox)

    report = _run(_bulk(deps, 2), *(u["id"] for u in users))

    assert _ingest_jobs(sandbox) == jobs + 1  # three User updates, above the threshold of 2: one job
    for n, user in enumerate(users):
        view = org.view(user["userPrincipalName"])
        assert (view["Title"], view["MobilePhone"]) == (f"Regional Lead {n}", None)  # #N/A empties the field
        assert report.outcomes[user["id"]] == "updated"


def test_a_value_salesforce_refuses_in_a_bulk_job_is_the_same_review_item_as_through_collections(
    deps, tenant, org, sandbox
):
    good, bad = _joiner(tenant, deps, ["All Employees"]), _joiner(tenant, deps, ["All Employees"])
    _run(deps, good["id"], bad["id"])
    tenant.update(good["id"], {"jobTitle": "Sales Manager"})
    tenant.update(bad["id"], {"mail": "not an address", "jobTitle": "Sales Manager"})
    jobs = _ingest_jobs(sandbox)

    report = _run(_bulk(deps, 1), good["id"], bad["id"])

    assert _ingest_jobs(sandbox) == jobs + 1
    assert (report.outcomes[good["id"]], report.outcomes[bad["id"]]) == ("updated", "review")
    [item] = [i for i in deps_links(deps).list_reviews() if i["entra_id"] == bad["id"]]
    assert item["code"] == "INVALID_EMAIL_ADDRESS" and "Email" in item["topic"] and "mapping.yaml:" in item["where"]
    assert org.view(good["userPrincipalName"])["Title"] == "Sales Manager"
    assert org.view(bad["userPrincipalName"])["Title"] == "Account Executive"  # its row refused as a whole


def test_a_bulk_job_the_org_refuses_falls_back_to_collections_and_the_users_are_still_updated(
    deps, tenant, org, sandbox, monkeypatch
):
    users = [_joiner(tenant, deps, ["All Employees"]) for _ in range(2)]
    _run(deps, *(u["id"] for u in users))
    for user in users:
        tenant.update(user["id"], {"jobTitle": "Field Marketing"})

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise PermanentError("Bulk API is not enabled for this user", service=SERVICE_SALESFORCE, status=400,
                             code="FEATURENOTENABLED")

    monkeypatch.setattr(BulkIngest, "update", refused)
    report = _run(_bulk(deps, 1), *(u["id"] for u in users))

    assert [report.outcomes[u["id"]] for u in users] == ["updated", "updated"]
    assert [org.view(u["userPrincipalName"])["Title"] for u in users] == ["Field Marketing"] * 2


def test_dry_run_writes_nothing(deps, tenant, org, sandbox):
    user = _joiner(tenant, deps, ["All Employees", "Marketing"])
    writes_before = _write_count(sandbox)
    report = sync_users(deps, [user["id"]], dry_run=True)
    assert report.plans[user["id"]].action is PlanAction.CREATE
    assert _write_count(sandbox) == writes_before
    assert org.view(user["userPrincipalName"]) is None


def _write_count(sandbox: Any) -> int:
    counters = dict(sandbox.state.activity.counters)
    return sum(v for k, v in counters.items() if k.startswith("salesforce.") and ("write" in k or "create" in k
                                                                                 or "update" in k or "delete" in k))


def test_a_batch_of_users_costs_one_salesforce_read_in_steady_state(deps, tenant, org):
    users = [_joiner(tenant, deps, ["All Employees", "Marketing"]) for _ in range(5)]
    _run(deps, *[u["id"] for u in users])
    for u in users:
        tenant.update(u["id"], {"jobTitle": "Marketing Manager"})
    report = _run(deps, *[u["id"] for u in users])
    assert report.count() == {"updated": 5}
    assert report.sf_calls == 2  # one composite read (users + entitlements) and one collections update for all five


def test_a_group_read_for_the_first_time_plans_its_members_only_once_the_poller_has_enumerated_users(deps, tenant):
    """IDSYNC_DELTA_START_FROM_NOW=false: before the poller's first full round has saved a link it hints every user
    itself; marking the group's members as well would plan them twice. After it, a newly mapped group's members are
    known only from this read."""
    deps = dataclasses.replace(deps, settings=deps.settings.model_copy(update={"delta_start_from_now": False}))
    backlog = DirtyUsers(deps.redis)
    deps.redis.flushdb()
    sync_users(deps, [], dry_run=True)
    assert backlog.pending() == 0  # no users deltaLink yet: the poller's first round covers everyone

    deps.redis.flushdb()
    deps.redis.set(delta_key(tenant_of(deps.settings), "users", "link"), "https://graph.example/delta?token=1")
    sync_users(deps, [], dry_run=True)
    west = GroupMembership(deps.redis).members(tenant.group("Sales Team West")["id"])
    assert west
    assert {str(m) for m in deps.redis.zrange("idsync:sync:dirty", 0, -1)} >= west


def test_starting_from_now_the_first_group_reads_set_a_baseline_and_a_group_mapped_later_plans_its_members(
    deps, tenant
):
    """IDSYNC_DELTA_START_FROM_NOW=true (the default): the tenant as it stands waits for a reconciliation, so the
    first start's group reads plan nobody; a group first read after that (newly mapped) has its members planned."""
    assert deps.settings.delta_start_from_now
    backlog = DirtyUsers(deps.redis)
    snapshots = GroupMembership(deps.redis)
    deps.redis.flushdb()
    deps.redis.set(delta_key(tenant_of(deps.settings), "users", "link"), "https://graph.example/delta?token=1")
    sync_users(deps, [], dry_run=True)
    assert backlog.pending() == 0  # every mapped group read, nobody planned: a first start
    assert snapshots.baseline_established()

    west = tenant.group("Sales Team West")["id"]
    snapshots.forget(west)  # as if "Sales Team West" had just been added to the mapping
    sync_users(deps, [], dry_run=True)
    members = snapshots.members(west)
    assert members
    assert {str(m) for m in deps.redis.zrange("idsync:sync:dirty", 0, -1)} == members
