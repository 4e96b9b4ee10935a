"""The ownership transfer's I/O against the real sandbox over HTTPS (the product's own Graph and Salesforce clients,
a real Redis): what it reads, what it moves, what Salesforce refuses, retries, Bulk API 2.0, a killed run's journal,
licence reclaim and leave of absence. The worker task around it is tested in tests/workers and tests/integration."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.admin_clients import GraphAdmin
from sandbox.salesforce.records import give_records, owned_records
from sandbox.server import SandboxServer
from shared import audit as audit_mod
from shared.errors import SERVICE_SALESFORCE, RetryableError
from shared.grants import Grants
from shared.graph_client import GraphClient
from shared.identity_links import IdentityLinks
from shared.mapping import Mapping, load_mapping, parse_mapping_text
from shared.offboarding import OffboardingMode
from shared.offboarding.executor import OWNERSHIP_TOPIC, OwnershipTransfer, TransferReport, inflight_key
from shared.offboarding.reader import read_offboarding
from shared.salesforce_client import SalesforceClient
from shared.settings import Settings, load_settings

DEMO = Path(__file__).resolve().parents[3] / "examples" / "mapping.yaml"
ADMIN = "admin@idsync-sandbox.example.com"
BOOK = {"Opportunity": 5, "Account": 2, "Task": 2, "Lead": 3, "Case": 2}
CLOSED = {"Opportunity": 2, "Lead": 1, "Case": 1, "Task": 1}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=60, groups=6, seed=5, overlap=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(sandbox: SandboxServer) -> Settings:
    return load_settings(_env_file=None, **{k.removeprefix("IDSYNC_").lower(): v for k, v in sandbox.env().items()})


@pytest.fixture
def sf(settings: Settings) -> Iterator[SalesforceClient]:
    client = SalesforceClient(settings)
    yield client
    client.close()


@pytest.fixture
def graph(settings: Settings) -> Iterator[GraphClient]:
    client = GraphClient(settings, sleep=lambda s: None)
    yield client
    client.close()


class Org:
    """Direct access to the sandbox org, for arranging and checking (never the product's path)."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self.org: Any = sandbox.state.org
        self.used: set[str] = set()

    def calls(self) -> int:
        return int(self.org.api_usage(self.sandbox.state.clock.time()))

    def user_id(self, username: str) -> str:
        with self.org.lock:
            return next(u["Id"] for u in self.org.live["User"].values() if u["Username"] == username)

    def user(self, user_id: str) -> dict[str, Any]:
        return dict(self.org.live["User"][user_id])

    def update(self, sobject: str, record_id: str, values: dict[str, Any]) -> None:
        self.org.update(sobject, record_id, values)

    def owner(self, record_id: str) -> str:
        found = self.org.get(record_id)
        assert found is not None
        return str(found[1]["OwnerId"])

    def queue_id(self, name: str) -> str:
        return str(self.org.seed_info["queues"][name])

    def leader(self) -> tuple[dict[str, Any], str, str]:
        """A fresh Entra member who owns no records yet, disabled in Entra, their Salesforce user deactivated, with
        a manager (another active user) in ManagerId: (Entra user, leaver id, manager id)."""
        state = self.sandbox.state
        with state.lock:
            members = sorted((dict(u) for u in state.directory.users.values()
                              if u.get("accountEnabled") and u.get("userType") == "Member"), key=lambda u: u["id"])
            by_username = {u["Username"].lower(): u for u in self.org.live["User"].values()}
        actives = [m for m in members if (u := by_username.get(m["userPrincipalName"].lower())) and u["IsActive"]
                   and u["Id"] not in self.org.deactivation_blockers and u["Id"] not in self.used]
        # a leader whose only records are the ones the test gives them
        person = next(m for m in actives if not any(owned_records(self.org, by_username[
            m["userPrincipalName"].lower()]["Id"]).values()))
        boss = next(m for m in actives if m is not person)
        leaver_id = by_username[person["userPrincipalName"].lower()]["Id"]
        manager_id = by_username[boss["userPrincipalName"].lower()]["Id"]
        self.used.update({leaver_id, manager_id})
        self.update("User", leaver_id, {"ManagerId": manager_id})
        GraphAdmin(self.sandbox.env()).disable(person["id"])
        self.update("User", leaver_id, {"IsActive": False})
        return person, leaver_id, manager_id


@pytest.fixture(scope="module")
def org(sandbox: SandboxServer) -> Org:
    return Org(sandbox)


def mapping_text(text: str) -> Mapping:
    return parse_mapping_text(textwrap.dedent(text), "mapping.yaml")


class Run:
    def __init__(self, sf: Any, graph: GraphClient, redis: Any, mapping: Mapping) -> None:
        self.sf, self.graph, self.redis, self.mapping = sf, graph, redis, mapping
        self.links, self.grants = IdentityLinks(redis), Grants(redis)

    def __call__(self, entra_id: str) -> TransferReport:
        inputs = read_offboarding(self.sf, self.graph, self.links, self.grants, self.mapping, entra_id)
        return OwnershipTransfer(self.sf, self.redis, self.links, self.grants, self.mapping, correlation_id="cid",
                                 sleep=lambda s: None).run(inputs)


def moved_audits(redis: Any, entra_id: str) -> list[dict[str, Any]]:
    return [r for r in audit_mod.recent(redis, 20_000)
            if r["action"] == "record_transfer" and r["entra_id"] == entra_id]


def events(redis: Any, entra_id: str) -> list[dict[str, Any]]:
    """The full audit events (before/after, rule) of the reassignments, from the inbox."""
    out = []
    for _id, fields in redis.xrange(audit_mod.STREAM_KEY):
        event = json.loads(fields["event"])
        if event["action"] == "record_transfer" and event["entra_id"] == entra_id:
            out.append(event)
    return out


def test_the_demo_contract_moves_open_records_only_in_three_calls_and_audits_each(sandbox, org, sf, graph,
                                                                                  redis_client) -> None:
    person, leaver_id, manager_id = org.leader()
    made = give_records(org.org, leaver_id, BOOK, CLOSED)
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    run = Run(sf, graph, redis_client, load_mapping(DEMO))
    before = org.calls()

    report = run(person["id"])

    assert org.calls() - before == 3  # two composite reads (10 queries) + one collection of 14 records
    assert report.outcome == "done" and dict(report.moved) == BOOK and report.unplaced == ()
    expected = {"Opportunity": manager_id, "Account": manager_id, "Task": manager_id,
                "Lead": org.queue_id("Lead_Queue"), "Case": org.queue_id("Support_Queue")}
    for sobject, ids in made["open"].items():
        assert {org.owner(i) for i in ids} == {expected[sobject]}, sobject
    for ids in made["closed"].values():
        assert {org.owner(i) for i in ids} == {leaver_id}  # closed records are never touched
    audited = events(redis_client, person["id"])
    assert sorted(e["detail"]["record_id"] for e in audited) == sorted(i for ids in made["open"].values() for i in ids)
    opp = next(e for e in audited if e["detail"]["object"] == "Opportunity")
    assert opp["before"] == {"OwnerId": leaver_id} and opp["after"] == {"OwnerId": manager_id}
    assert opp["rule"].startswith("manager (Salesforce ManagerId) (mapping.yaml:")
    assert redis_client.hlen(inflight_key(person["id"])) == 0

    again_before = org.calls()
    again = run(person["id"])
    assert again.moved_total == 0 and org.calls() - again_before == 2  # reads only: nothing left to move
    assert len(moved_audits(redis_client, person["id"])) == sum(BOOK.values())


def test_an_owner_salesforce_refuses_sends_the_record_to_the_next_rule(sandbox, org, sf, graph, redis_client) -> None:
    person, leaver_id, manager_id = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 3, "Account": 2})
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    mapping = load_mapping(DEMO)
    links, grants = IdentityLinks(redis_client), Grants(redis_client)
    inputs = read_offboarding(sf, graph, links, grants, mapping, person["id"])
    assert inputs.leaver.manager is not None and inputs.leaver.manager.active
    org.update("User", manager_id, {"IsActive": False})  # the manager leaves too, after the plan was read
    try:
        report = OwnershipTransfer(sf, redis_client, links, grants, mapping, correlation_id="c",
                                   sleep=lambda s: None).run(inputs)
    finally:
        org.update("User", manager_id, {"IsActive": True})
    admin = org.user_id(ADMIN)
    assert report.outcome == "done"
    assert {org.owner(i) for ids in made["open"].values() for i in ids} == {admin}
    assert {e["rule"].split(" (")[0] for e in events(redis_client, person["id"])} == {f"fallback owner {ADMIN}"}


def test_a_validation_rule_refusing_the_manager_falls_through_for_that_object_only(sandbox, org, sf, graph,
                                                                                   redis_client) -> None:
    person, leaver_id, manager_id = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 3, "Account": 2})
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    sandbox.state.config.patch({"salesforce": {"validation_rules": [f"Opportunity.OwnerId={manager_id}"]}})
    try:
        report = Run(sf, graph, redis_client, load_mapping(DEMO))(person["id"])
    finally:
        sandbox.state.config.patch({"salesforce": {"validation_rules": []}})
    assert report.outcome == "done"
    assert {org.owner(i) for i in made["open"]["Opportunity"]} == {org.user_id(ADMIN)}
    assert {org.owner(i) for i in made["open"]["Account"]} == {manager_id}


def test_a_record_no_rule_places_is_a_review_item_until_a_rerun_places_it(sandbox, org, sf, graph,
                                                                          redis_client) -> None:
    person, leaver_id, _ = org.leader()
    made = give_records(org.org, leaver_id, {"Contact": 2, "Task": 1})
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    stuck = mapping_text("""\
        offboarding:
          objects:
            Contact:
              rules: [{user: nobody@idsync-sandbox.example.com}]
            Task:
              rules: [{queue: Lead_Queue}]
        """)
    report = Run(sf, graph, redis_client, stuck)(person["id"])
    assert report.outcome == "partial" and len(report.unplaced) == 3 and report.moved_total == 0
    item = IdentityLinks(redis_client).review(person["id"], OWNERSHIP_TOPIC)
    assert item is not None and item["id"] == report.review_id and item["record_count"] == 3
    assert "queue Lead_Queue does not take Task records" in json.dumps(item["records"])
    assert "user nobody@idsync-sandbox.example.com does not exist in Salesforce" in json.dumps(item["records"])

    fixed = mapping_text(f"""\
        offboarding:
          objects:
            Contact:
              rules: [{{user: {ADMIN}}}]
            Task:
              rules: [{{queue: Lead_Queue}}, {{user: {ADMIN}}}]
        """)
    again = Run(sf, graph, redis_client, fixed)(person["id"])
    assert again.outcome == "done" and again.moved_total == 3
    assert IdentityLinks(redis_client).review(person["id"], OWNERSHIP_TOPIC) is None
    assert {org.owner(i) for ids in made["open"].values() for i in ids} == {org.user_id(ADMIN)}


class Spy:
    """The real client, with a record of what each collections call sent; `fail_after_first` makes the first
    collections call raise after Salesforce applied it (a timeout on the way back)."""

    def __init__(self, sf: SalesforceClient, fail_after_first: bool = False) -> None:
        self.sf = sf
        self.sent: list[list[str]] = []
        self.fail_after_first = fail_after_first

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sf, name)

    def collections_update(self, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        self.sent.append([r["id"] for r in records])
        answers = self.sf.collections_update(records, all_or_none=all_or_none)
        if self.fail_after_first and len(self.sent) == 1:
            raise RetryableError("request timed out", service=SERVICE_SALESFORCE, code="timeout")
        return answers


def test_lock_errors_mid_batch_resend_only_the_failed_records(sandbox, org, sf, graph, redis_client) -> None:
    person, leaver_id, _ = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 60, "Account": 20})
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    spy = Spy(sf)
    sandbox.state.faults.patch({"salesforce": {"record_lock_rate": 0.2}})
    moved = 0
    try:
        for _attempt in range(3):  # a record locked in every round: the task gives up and the worker retries it
            try:
                report = Run(spy, graph, redis_client, load_mapping(DEMO))(person["id"])
            except RetryableError:
                moved = len(moved_audits(redis_client, person["id"]))
                continue
            break
    finally:
        sandbox.state.faults.patch({"salesforce": {"record_lock_rate": 0.0}})
    every = {i for ids in made["open"].values() for i in ids}
    assert report.outcome == "done" and report.moved_total + moved == 80
    assert len(spy.sent) >= 2 and set(spy.sent[0]) == every
    assert all(len(later) < 80 for later in spy.sent[1:])  # only what failed goes again
    assert [org.owner(i) for i in every if org.owner(i) == leaver_id] == []
    audited = [r["detail"]["record_id"] for r in moved_audits(redis_client, person["id"])]
    assert sorted(audited) == sorted(every)  # each record audited exactly once


def test_a_call_failing_after_salesforce_applied_it_is_reconciled_not_resent(sandbox, org, sf, graph,
                                                                            redis_client) -> None:
    person, leaver_id, _ = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 7})
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    spy = Spy(sf, fail_after_first=True)
    report = Run(spy, graph, redis_client, load_mapping(DEMO))(person["id"])
    assert report.outcome == "done" and report.moved_total == 7
    assert len(spy.sent) == 1  # read back instead of sent twice
    assert sorted(r["detail"]["record_id"] for r in moved_audits(redis_client, person["id"])) == sorted(
        made["open"]["Opportunity"])


def test_above_the_bulk_threshold_records_go_through_bulk_api_2_and_failures_fall_through(
        sandbox, org, sf, graph, redis_client) -> None:
    person, leaver_id, manager_id = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 12, "Account": 3})
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    mapping = mapping_text(f"""\
        offboarding:
          fallback_owner: {ADMIN}
          bulk_threshold: 10
          objects:
            Opportunity: {{rules: [manager, fallback]}}
            Account: {{rules: [manager, fallback]}}
        """)
    refused = made["open"]["Opportunity"][:4]
    jobs_before = len(sandbox.state.org.bulk_jobs)
    sandbox.state.config.patch({"salesforce": {"validation_rules": [f"Opportunity.Name={org.org.get(i)[1]['Name']}"
                                                                    for i in refused]}})
    try:
        report = Run(sf, graph, redis_client, mapping)(person["id"])
    finally:
        sandbox.state.config.patch({"salesforce": {"validation_rules": []}})
    assert report.outcome == "partial"  # the validation rule refuses those 4 for every owner
    assert len(sandbox.state.org.bulk_jobs) == jobs_before + 1  # one job: 12 Opportunities; 3 Accounts by collection
    assert {org.owner(i) for i in made["open"]["Opportunity"][4:]} == {manager_id}
    assert {org.owner(i) for i in refused} == {leaver_id}
    assert len(report.unplaced) == 4 and all("FIELD_CUSTOM_VALIDATION_EXCEPTION" in r for u in report.unplaced
                                             for r in u.reasons)


def test_a_killed_run_is_settled_from_its_journal_without_double_moves_or_lost_audit(sandbox, org, sf, graph,
                                                                                    redis_client) -> None:
    person, leaver_id, manager_id = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 6})
    ids = made["open"]["Opportunity"]
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    # What a run killed after Salesforce applied its first chunk leaves behind: three records moved, journalled,
    # and never audited.
    for record_id in ids[:3]:
        redis_client.hset(inflight_key(person["id"]), record_id, json.dumps(
            {"sobject": "Opportunity", "label": "", "from": leaver_id, "to": manager_id, "to_name": "boss",
             "rule_index": 0, "rule": "manager"}))
        org.update("Opportunity", record_id, {"OwnerId": manager_id})
    spy = Spy(sf)
    report = Run(spy, graph, redis_client, load_mapping(DEMO))(person["id"])
    assert report.recovered == 3 and report.moved_total == 3
    assert sorted(spy.sent[0]) == sorted(ids[3:])  # the moved ones are not sent again
    audited = moved_audits(redis_client, person["id"])
    assert sorted(r["detail"]["record_id"] for r in audited) == sorted(ids)
    assert sorted(r["detail"]["record_id"] for r in audited if r["detail"]["recovered"]) == sorted(ids[:3])
    assert redis_client.hlen(inflight_key(person["id"])) == 0


def test_licence_reclaim_removes_idsync_permission_sets_and_the_licence_they_needed(sandbox, org, sf, graph,
                                                                                   redis_client) -> None:
    person, leaver_id, _ = org.leader()
    seed = org.org.seed_info
    psl, sales_ps, marketing_ps = (seed["licenses"]["Sales Cloud User PSL"], seed["permission_sets"][
        "Sales_Cloud_User"], seed["permission_sets"]["Marketing_User"])
    for sobject, values in (("PermissionSetLicenseAssign", {"AssigneeId": leaver_id, "PermissionSetLicenseId": psl}),
                            ("PermissionSetAssignment", {"AssigneeId": leaver_id, "PermissionSetId": sales_ps}),
                            ("PermissionSetAssignment", {"AssigneeId": leaver_id, "PermissionSetId": marketing_ps})):
        if (leaver_id, values.get("PermissionSetLicenseId") or values.get("PermissionSetId")) not in (
                org.org.psla_keys.keys() | org.org.psa_keys.keys()):
            org.org.insert(sobject, values)
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    Grants(redis_client).record(person["id"], added=["ps:Sales_Cloud_User", "psl:SalesCloudUserPsl"])
    mapping = mapping_text(f"""\
        offboarding:
          fallback_owner: {ADMIN}
          reclaim_licences: true
          objects: {{}}
        """)
    report = Run(sf, graph, redis_client, mapping)(person["id"])
    assert report.licences_removed == ("ps:Sales_Cloud_User", "psl:SalesCloudUserPsl")
    assert (leaver_id, psl) not in org.org.psla_keys
    assert (leaver_id, sales_ps) not in org.org.psa_keys
    assert (leaver_id, marketing_ps) in org.org.psa_keys  # an admin's grant stays
    assert Grants(redis_client).of([person["id"]])[person["id"]] == frozenset()


def test_a_disabled_member_of_a_leave_of_absence_group_keeps_records_and_licence(sandbox, org, sf, graph,
                                                                                 redis_client) -> None:
    person, leaver_id, _ = org.leader()
    made = give_records(org.org, leaver_id, {"Opportunity": 2})
    with sandbox.state.lock:
        directory = sandbox.state.directory
        group = next(g for g in directory.groups.values() if g["id"] not in directory.member_of.get(person["id"], ()))
    GraphAdmin(sandbox.env()).http.post(f"/groups/{group['id']}/members/$ref", json={
        "@odata.id": f"{sandbox.env()['IDSYNC_GRAPH_URL']}/directoryObjects/{person['id']}"}).raise_for_status()
    IdentityLinks(redis_client).set_link(person["id"], leaver_id, person["userPrincipalName"])
    mapping = mapping_text(f"""\
        offboarding:
          fallback_owner: {ADMIN}
          leave_of_absence: {{groups: ["{group['displayName']}"]}}
          objects:
            Opportunity: {{rules: [fallback]}}
        """)
    report = Run(sf, graph, redis_client, mapping)(person["id"])
    assert report.plan.mode is OffboardingMode.LEAVE_OF_ABSENCE and report.outcome == "skipped_leave_of_absence"
    assert {org.owner(i) for i in made["open"]["Opportunity"]} == {leaver_id}
    assert len(owned_records(org.org, leaver_id)["Opportunity"]) >= 2


def test_mapping_check_against_the_org_names_unknown_owners_wrong_queues_and_bad_filters(sandbox, sf, graph) -> None:
    from shared.offboarding.names import check_offboarding_names, read_org_facts

    mapping = mapping_text(f"""\
        offboarding:
          fallback_owner: admn@idsync-sandbox.example.com
          leave_of_absence: {{groups: [Sabbatical]}}
          objects:
            Lead:
              rules: [{{queue: Lead_Queue}}, {{round_robin: All_Sales}}]
            Task:
              rules: [{{queue: Support_Queue}}, {{round_robin: All_Sale}}, fallback]
            Case:
              open: "Statsu = 'New'"
              rules: [{{queue: Suport_Queue}}, {{user: {ADMIN}}}]
        """)
    problems = [str(p) for p in check_offboarding_names(mapping, read_org_facts(sf, mapping, graph))]
    assert problems == [
        "mapping.yaml:2:19: fallback owner 'admn@idsync-sandbox.example.com' does not exist in the org (fix: did you "
        "mean 'admin@idsync-sandbox.example.com'?)",
        "mapping.yaml:3:31: Entra group 'Sabbatical' does not exist in the tenant",
        "mapping.yaml:8:15: queue 'Support_Queue' does not take Task records (it takes Case, "
        "User_Provisioning_Request__c; Setup > Queues > Support_Queue > Supported Objects)",
        "mapping.yaml:8:39: public group 'All_Sale' does not exist in the org (fix: did you mean 'All_Sales'?)",
        "mapping.yaml:10:7: the open records of Case cannot be queried: INVALID_FIELD: " + problems[4].split(
            "INVALID_FIELD: ", 1)[-1],
        "mapping.yaml:11:15: queue 'Suport_Queue' does not exist in the org (fix: did you mean 'Support_Queue'?)",
    ]
    assert "Statsu" in problems[4]
    assert check_offboarding_names(load_mapping(DEMO), read_org_facts(sf, load_mapping(DEMO), graph)) == []


def test_an_enabled_user_who_left_the_mapping_s_scope_is_offboarded_and_one_who_returned_is_not(
        sandbox, org, sf, graph, redis_client) -> None:
    from shared.entra_status import read_entra_user
    from shared.offboarding.scope import clear_left_scope, mark_left_scope, offboarding_state

    person, leaver_id, manager_id = org.leader()
    GraphAdmin(sandbox.env()).enable(person["id"])  # enabled in Entra, but out of the mapping's scope
    made = give_records(org.org, leaver_id, {"Opportunity": 2})
    links = IdentityLinks(redis_client)
    links.set_link(person["id"], leaver_id, person["userPrincipalName"])
    mapping = load_mapping(DEMO)

    def run() -> TransferReport:
        state = offboarding_state(redis_client, person["id"], read_entra_user(graph, person["id"]))
        inputs = read_offboarding(sf, graph, links, Grants(redis_client), mapping, person["id"], state=state)
        return OwnershipTransfer(sf, redis_client, links, Grants(redis_client), mapping, correlation_id="c").run(
            inputs)

    assert run().outcome == "skipped_not_a_leaver"  # enabled and not marked: a returning user keeps everything
    mark_left_scope(redis_client, person["id"])
    assert run().outcome == "done"
    assert {org.owner(i) for i in made["open"]["Opportunity"]} == {manager_id}
    clear_left_scope(redis_client, person["id"])
    assert offboarding_state(redis_client, person["id"], read_entra_user(graph, person["id"])).enabled
