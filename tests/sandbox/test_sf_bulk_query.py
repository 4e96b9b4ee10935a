"""Bulk API 2.0 query jobs (`jobs/query`) over real HTTPS, one documented behaviour per test.

What Salesforce documents (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/queries.htm
and the Create / Get Information / Get Results / Abort / Delete a Query Job pages) is asserted as such; the sandbox's
own choices where the docs are silent (error codes for results-too-early and bad locators, null as `""`) are named
in the test names so a change to them is a visible decision.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from simple_salesforce import Salesforce

from sandbox.salesforce import bulk_query
from sandbox.server import SandboxServer
from tests.sandbox.simple_salesforce_typed import bulk2_object

pytestmark = pytest.mark.integration

V = "/services/data/v62.0"


@pytest.fixture
def sf_http(sandbox: SandboxServer, http: httpx.Client) -> httpx.Client:
    """The shared HTTPS client, signed in to the org with the client-credentials flow."""
    creds = sandbox.state.creds
    resp = http.post("/services/oauth2/token", data={"grant_type": "client_credentials"},
                     auth=(creds.sf_client_id, creds.sf_client_secret))
    assert resp.status_code == 200, resp.text
    http.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return http


@pytest.fixture
def config(sandbox: SandboxServer) -> Iterator[Callable[[str, Any], None]]:
    """Set `salesforce.*` settings for one test; the previous values come back afterwards."""
    cfg = sandbox.state.config
    saved: dict[str, Any] = {}

    def set_(key: str, value: Any) -> None:
        saved.setdefault(key, cfg.get(f"salesforce.{key}"))
        cfg.set(f"salesforce.{key}", value)

    yield set_
    for key, value in saved.items():
        cfg.set(f"salesforce.{key}", value)


def create(api: httpx.Client, soql: str, **extra: Any) -> httpx.Response:
    return api.post(f"{V}/jobs/query", json={"operation": "query", "query": soql, **extra})


def wait_for(api: httpx.Client, job_id: str, state: str = "JobComplete", timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = api.get(f"{V}/jobs/query/{job_id}").json()
        if info["state"] == state or time.monotonic() > deadline:
            assert info["state"] == state, info
            return dict(info)
        time.sleep(0.02)


def run_job(api: httpx.Client, soql: str, **extra: Any) -> str:
    resp = create(api, soql, **extra)
    assert resp.status_code == 200, resp.text
    job_id = str(resp.json()["id"])
    wait_for(api, job_id)
    return job_id


def rows_of(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def account(api: httpx.Client, **fields: Any) -> str:
    resp = api.post(f"{V}/sobjects/Account", json=fields)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def tag() -> str:
    return uuid.uuid4().hex[:10]


# ------------------------------------------------------------------------------------------------ create, poll, read


def test_create_answers_the_job_in_state_upload_complete_with_a_750_id(sf_http: httpx.Client) -> None:
    resp = create(sf_http, "SELECT Id, Username FROM User")
    assert resp.status_code == 200
    job = resp.json()
    assert job["id"].startswith("750") and len(job["id"]) == 18
    assert {k: job[k] for k in ("operation", "object", "state", "concurrencyMode", "contentType", "apiVersion",
                                "lineEnding", "columnDelimiter")} == {
        "operation": "query", "object": "User", "state": "UploadComplete", "concurrencyMode": "Parallel",
        "contentType": "CSV", "apiVersion": 62.0, "lineEnding": "LF", "columnDelimiter": "COMMA"}
    assert job["createdById"].startswith("005") and job["createdDate"].endswith("+0000")


def test_round_trip_create_poll_and_read_every_user_as_csv(sandbox: SandboxServer, sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id, Username, Profile.Name FROM User")
    info = sf_http.get(f"{V}/jobs/query/{job_id}").json()
    users = sandbox.state.org.live["User"]
    assert info["jobType"] == "V2Query" and info["numberRecordsProcessed"] == len(users)
    assert info["retries"] == 0 and isinstance(info["totalProcessingTime"], int)
    resp = sf_http.get(f"{V}/jobs/query/{job_id}/results")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["Sforce-Locator"] == "null"
    assert resp.headers["Sforce-NumberOfRecords"] == str(len(users))
    rows = rows_of(resp.text)
    assert rows[0] == ["Id", "Username", "Profile.Name"]
    assert {r[0] for r in rows[1:]} == set(users)


def test_pages_follow_sforce_locator_until_it_is_the_string_null(sandbox: SandboxServer,
                                                                 sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    total = len(sandbox.state.org.live["User"])
    seen: list[str] = []
    counts: list[int] = []
    params: dict[str, Any] = {"maxRecords": 7}
    while True:
        resp = sf_http.get(f"{V}/jobs/query/{job_id}/results", params=params)
        rows = rows_of(resp.text)
        assert rows[0] == ["Id"]  # every page starts with the header row
        counts.append(int(resp.headers["Sforce-NumberOfRecords"]))
        assert counts[-1] == len(rows) - 1
        seen += [r[0] for r in rows[1:]]
        if resp.headers["Sforce-Locator"] == "null":
            break
        params = {"maxRecords": 7, "locator": resp.headers["Sforce-Locator"]}
    assert len(seen) == total == len(set(seen))
    assert counts[:-1] == [7] * (len(counts) - 1) and 1 <= counts[-1] <= 7


def test_a_locator_can_be_fetched_again_and_gives_the_same_page(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    first = sf_http.get(f"{V}/jobs/query/{job_id}/results", params={"maxRecords": 5})
    locator = first.headers["Sforce-Locator"]
    again = [sf_http.get(f"{V}/jobs/query/{job_id}/results", params={"maxRecords": 5, "locator": locator}).text
             for _ in range(2)]
    assert again[0] == again[1] and again[0] != first.text


def test_an_unknown_locator_is_refused_with_invalid_query_locator(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    for bad in ("not-a-locator", "OTk5OTk5", "null"):  # OTk5OTk5 is "999999": past the end
        resp = sf_http.get(f"{V}/jobs/query/{job_id}/results", params={"locator": bad})
        assert resp.status_code == 400
        assert resp.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_max_records_must_be_a_positive_integer(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    for bad in ("0", "-3", "ten"):
        resp = sf_http.get(f"{V}/jobs/query/{job_id}/results", params={"maxRecords": bad})
        assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALIDREQUEST"


def test_without_max_records_a_page_holds_the_configured_default(sf_http: httpx.Client, config: Any) -> None:
    config("bulk_query_default_max_records", 4)
    job_id = run_job(sf_http, "SELECT Id FROM User")
    resp = sf_http.get(f"{V}/jobs/query/{job_id}/results")
    assert resp.headers["Sforce-NumberOfRecords"] == "4" and resp.headers["Sforce-Locator"] != "null"


# ------------------------------------------------------------------------------------------------ CSV format


def test_values_with_commas_quotes_and_newlines_are_quoted_and_quotes_doubled(sf_http: httpx.Client) -> None:
    name = f'Smith, "Jones" & Co {tag()}'
    description = "line one\nline two, with a comma"
    account(sf_http, Name=name, Description=description)
    job_id = run_job(sf_http, f"SELECT Name, Description FROM Account WHERE Name = '{name}'")
    text = sf_http.get(f"{V}/jobs/query/{job_id}/results").text
    quoted = name.replace('"', '""')
    assert text == f'"Name","Description"\n"{quoted}","{description}"\n'
    assert rows_of(text)[1] == [name, description]


def test_nulls_are_empty_cells_booleans_true_false_and_datetimes_in_bulk_format(sf_http: httpx.Client) -> None:
    name = f"Formats {tag()}"
    account(sf_http, Name=name, NumberOfEmployees=42, AnnualRevenue=1250000.5)
    job_id = run_job(sf_http, "SELECT Id, Name, IsDeleted, Industry, Parent.Name, Owner.Name, NumberOfEmployees, "
                              f"AnnualRevenue, CreatedDate FROM Account WHERE Name = '{name}'")
    text = sf_http.get(f"{V}/jobs/query/{job_id}/results").text
    header, row = rows_of(text)
    assert header == ["Id", "Name", "IsDeleted", "Industry", "Parent.Name", "Owner.Name", "NumberOfEmployees",
                      "AnnualRevenue", "CreatedDate"]
    values = dict(zip(header, row, strict=True))
    assert values["IsDeleted"] == "false"
    assert values["Industry"] == "" and values["Parent.Name"] == ""  # null field, null parent
    assert '"false","","",' in text  # null is written as an empty quoted cell
    assert values["Owner.Name"] != ""
    assert (values["NumberOfEmployees"], values["AnnualRevenue"]) == ("42", "1250000.5")
    created = values["CreatedDate"]
    assert len(created) == 24 and created[10] == "T" and created.endswith("Z") and created[19] == "."


def test_column_delimiter_and_crlf_line_ending_are_honoured(sf_http: httpx.Client) -> None:
    name = f"Semi;colon {tag()}"
    account(sf_http, Name=name)
    job_id = run_job(sf_http, f"SELECT Name, IsDeleted FROM Account WHERE Name = '{name}'",
                     columnDelimiter="SEMICOLON", lineEnding="CRLF")
    info = sf_http.get(f"{V}/jobs/query/{job_id}").json()
    assert (info["columnDelimiter"], info["lineEnding"]) == ("SEMICOLON", "CRLF")
    text = sf_http.get(f"{V}/jobs/query/{job_id}/results").text
    assert text == f'"Name";"IsDeleted"\r\n"{name}";"false"\r\n'


def test_an_unsupported_delimiter_or_line_ending_is_refused(sf_http: httpx.Client) -> None:
    for extra in ({"columnDelimiter": "SPACE"}, {"lineEnding": "CR"}, {"contentType": "JSON"}):
        resp = create(sf_http, "SELECT Id FROM User", **extra)
        assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALIDJOB", extra


def test_an_operation_other_than_query_or_query_all_is_refused(sf_http: httpx.Client) -> None:
    resp = sf_http.post(f"{V}/jobs/query", json={"operation": "insert", "query": "SELECT Id FROM User"})
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALIDJOB"


# ------------------------------------------------------------------------------------------------ SOQL


@pytest.mark.parametrize(("soql", "code"), [
    ("SELEC Id FROM User", "MALFORMED_QUERY"),
    ("SELECT Id FROM User WHERE", "MALFORMED_QUERY"),
    ("", "MALFORMED_QUERY"),
    ("SELECT NoSuchField FROM User", "INVALID_FIELD"),
    ("SELECT Id FROM NoSuchObject", "INVALID_TYPE"),
])
def test_malformed_or_unknown_soql_is_refused_at_create_like_the_rest_query(sf_http: httpx.Client, soql: str,
                                                                            code: str) -> None:
    resp = create(sf_http, soql)
    assert resp.status_code == 400
    assert resp.json()[0]["errorCode"] == code


@pytest.mark.parametrize("soql", [
    "SELECT COUNT() FROM User",
    "SELECT COUNT(Id) FROM User",
    "SELECT MAX(CreatedDate) FROM User",
    "SELECT Department FROM User GROUP BY Department",
    "SELECT Id FROM User OFFSET 10",
    "SELECT TYPEOF Owner WHEN User THEN Username END FROM Account",
    "SELECT Id, (SELECT Id FROM Contacts) FROM Account",
    "SELECT FIELDS(STANDARD) FROM User",
])
def test_soql_bulk_query_documents_as_unsupported_is_refused(sf_http: httpx.Client, soql: str) -> None:
    resp = create(sf_http, soql)
    assert resp.status_code == 400
    assert resp.json()[0]["errorCode"] == "FUNCTIONALITY_NOT_ENABLED"
    assert "not supported in Bulk Query" in resp.json()[0]["message"]


def test_keywords_inside_string_literals_are_not_mistaken_for_clauses(sf_http: httpx.Client) -> None:
    resp = create(sf_http, "SELECT Id FROM Account WHERE Name = 'group by offset count(x)'")
    assert resp.status_code == 200, resp.text


def test_order_by_and_limit_are_accepted(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Username FROM User ORDER BY Username DESC LIMIT 3")
    rows = rows_of(sf_http.get(f"{V}/jobs/query/{job_id}/results").text)[1:]
    names = [r[0] for r in rows]
    assert len(names) == 3 and names == sorted(names, key=str.lower, reverse=True)


def test_query_all_includes_deleted_rows_and_query_does_not(sandbox: SandboxServer, sf_http: httpx.Client) -> None:
    prefix = f"Recycled {tag()}"
    kept, gone = account(sf_http, Name=f"{prefix} kept"), account(sf_http, Name=f"{prefix} gone")
    assert sf_http.delete(f"{V}/sobjects/Account/{gone}").status_code == 204
    soql = f"SELECT Id, IsDeleted FROM Account WHERE Name LIKE '{prefix}%'"
    live = rows_of(sf_http.get(f"{V}/jobs/query/{run_job(sf_http, soql)}/results").text)[1:]
    assert live == [[kept, "false"]]
    all_id = run_job(sf_http, soql, operation="queryAll")
    assert sf_http.get(f"{V}/jobs/query/{all_id}").json()["operation"] == "queryAll"
    everything = rows_of(sf_http.get(f"{V}/jobs/query/{all_id}/results").text)[1:]
    assert sorted(everything) == sorted([[kept, "false"], [gone, "true"]])


def test_results_are_a_snapshot_taken_when_the_job_ran(sf_http: httpx.Client) -> None:
    name = f"Snapshot {tag()}"
    acct = account(sf_http, Name=name)
    job_id = run_job(sf_http, f"SELECT Name FROM Account WHERE Id = '{acct}'")
    assert sf_http.patch(f"{V}/sobjects/Account/{acct}", json={"Name": f"{name} renamed"}).status_code == 204
    assert rows_of(sf_http.get(f"{V}/jobs/query/{job_id}/results").text)[1] == [name]


# ------------------------------------------------------------------------------------------------ job lifecycle


def test_results_before_job_complete_are_refused_with_invalidjobstate(sandbox: SandboxServer,
                                                                       sf_http: httpx.Client, config: Any) -> None:
    config("bulk_query_processing_s", 600)
    job_id = create(sf_http, "SELECT Id FROM User").json()["id"]
    wait_for(sf_http, job_id, "InProgress")
    resp = sf_http.get(f"{V}/jobs/query/{job_id}/results")
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    sandbox.state.clock.advance(601)
    assert sf_http.get(f"{V}/jobs/query/{job_id}").json()["state"] == "JobComplete"
    assert sf_http.get(f"{V}/jobs/query/{job_id}/results").status_code == 200


def test_a_running_job_can_be_aborted_and_then_deleted(sf_http: httpx.Client, config: Any) -> None:
    config("bulk_query_processing_s", 600)
    job_id = create(sf_http, "SELECT Id FROM User").json()["id"]
    wait_for(sf_http, job_id, "InProgress")
    refused = sf_http.delete(f"{V}/jobs/query/{job_id}")
    assert refused.status_code == 400
    assert refused.json()[0] == {"errorCode": "API_ERROR", "fields": [],
                                 "message": "Error encountered when deleting the job because the job is not terminated"}
    aborted = sf_http.patch(f"{V}/jobs/query/{job_id}", json={"state": "Aborted"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    assert sf_http.get(f"{V}/jobs/query/{job_id}/results").json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert sf_http.delete(f"{V}/jobs/query/{job_id}").status_code == 204
    gone = sf_http.get(f"{V}/jobs/query/{job_id}")
    assert gone.status_code == 404 and gone.json()[0]["errorCode"] == "NOT_FOUND"


def test_a_finished_job_cannot_be_aborted_but_can_be_deleted(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    resp = sf_http.patch(f"{V}/jobs/query/{job_id}", json={"state": "Aborted"})
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert sf_http.patch(f"{V}/jobs/query/{job_id}", json={"state": "UploadComplete"}).status_code == 400
    assert sf_http.delete(f"{V}/jobs/query/{job_id}").status_code == 204


def test_a_job_that_breaks_while_running_reports_failed_with_an_error_message(
    sf_http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(state: Any, job: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(bulk_query, "snapshot", broken)
    job_id = create(sf_http, "SELECT Id FROM User").json()["id"]
    info = wait_for(sf_http, job_id, "Failed")
    assert "disk full" in info["errorMessage"]
    assert sf_http.get(f"{V}/jobs/query/{job_id}/results").status_code == 400


def test_results_asked_with_another_api_version_answer_409(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    resp = sf_http.get(f"/services/data/v61.0/jobs/query/{job_id}/results")
    assert resp.status_code == 409


def test_an_unknown_job_is_not_found(sf_http: httpx.Client) -> None:
    for method in ("GET", "DELETE"):
        resp = sf_http.request(method, f"{V}/jobs/query/7505g00000000ZZAAA")
        assert resp.status_code == 404 and resp.json()[0]["errorCode"] == "NOT_FOUND"


def test_get_jobs_query_lists_query_jobs(sf_http: httpx.Client) -> None:
    job_id = run_job(sf_http, "SELECT Id FROM User")
    listing = sf_http.get(f"{V}/jobs/query").json()
    assert listing["done"] is True and listing["nextRecordsUrl"] is None
    assert job_id in {j["id"] for j in listing["records"]}
    assert sf_http.get(f"{V}/jobs/query", params={"jobType": "V2Ingest"}).json()["records"] == []


def test_query_jobs_need_a_valid_session(http: httpx.Client) -> None:
    resp = http.post(f"{V}/jobs/query", json={"operation": "query", "query": "SELECT Id FROM User"},
                     headers={"Authorization": "Bearer not-a-session"})
    assert resp.status_code == 401 and resp.json()[0]["errorCode"] == "INVALID_SESSION_ID"


# ------------------------------------------------------------------------------------------------ API usage


def test_every_call_counts_as_one_api_request_and_no_write_is_counted(sandbox: SandboxServer,
                                                                      sf_http: httpx.Client) -> None:
    st = sandbox.state
    writes_before = {k: v for k, v in st.activity.counters.items() if k.startswith("sf_write")}
    usage_before = st.org.api_usage(st.clock.time())
    job_id = create(sf_http, "SELECT Id, Username FROM User").json()["id"]  # 1
    wait_for(sf_http, job_id)  # at least 1 poll
    polls = st.org.api_usage(st.clock.time()) - usage_before - 1
    first = sf_http.get(f"{V}/jobs/query/{job_id}/results", params={"maxRecords": 10})  # 1
    sf_http.get(f"{V}/jobs/query/{job_id}/results",
                params={"maxRecords": 10, "locator": first.headers["Sforce-Locator"]})  # 1
    sf_http.delete(f"{V}/jobs/query/{job_id}")  # 1
    assert polls >= 1
    assert st.org.api_usage(st.clock.time()) - usage_before == 1 + polls + 3
    assert first.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert {k: v for k, v in st.activity.counters.items() if k.startswith("sf_write")} == writes_before


def test_limits_report_the_query_jobs_created_in_the_window(sf_http: httpx.Client) -> None:
    before = sf_http.get(f"{V}/limits").json()["DailyBulkV2QueryJobs"]
    run_job(sf_http, "SELECT Id FROM User")
    after = sf_http.get(f"{V}/limits").json()["DailyBulkV2QueryJobs"]
    assert after["Max"] == 10_000 and after["Remaining"] == before["Remaining"] - 1


def test_the_daily_api_limit_applies_to_query_job_calls(sandbox: SandboxServer, sf_http: httpx.Client,
                                                        config: Any) -> None:
    st = sandbox.state
    config("daily_api_limit", st.org.api_usage(st.clock.time()))
    resp = create(sf_http, "SELECT Id FROM User")
    assert resp.status_code == 403 and resp.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


# ------------------------------------------------------------------------------------------------ a real client


@pytest.fixture(scope="module")
def big_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """A sandbox seeded with more than 5,000 Salesforce users (every Entra user also exists in Salesforce)."""
    server = SandboxServer(tmp_path_factory.mktemp("bulk-query"), users=5300, groups=8, seed=11, overlap=1.0).start()
    try:
        yield server
    finally:
        server.stop()


def test_unmodified_simple_salesforce_reads_5000_users_through_bulk2_query(big_org: SandboxServer) -> None:
    creds = big_org.state.creds
    session = requests.Session()
    session.trust_env = False  # the machine's REQUESTS_CA_BUNDLE would override `verify`
    session.verify = str(big_org.state.ca_path)
    session.headers["Connection"] = "close"
    token = session.post(f"{big_org.base_url}/services/oauth2/token", data={"grant_type": "client_credentials"},
                         auth=(creds.sf_client_id, creds.sf_client_secret)).json()["access_token"]
    sf = Salesforce(instance_url=big_org.base_url, session_id=token, session=session, version="62.0")
    users = big_org.state.org.live["User"]
    assert len(users) >= 5000
    chunks = list(bulk2_object(sf, "User").query("SELECT Id, Username, IsActive, Profile.Name FROM User",
                                                 max_records=2000, wait=1))
    session.close()
    assert len(chunks) == -(-len(users) // 2000)
    seen: dict[str, list[str]] = {}
    for chunk in chunks:
        assert isinstance(chunk, str)
        rows = rows_of(chunk)
        assert rows[0] == ["Id", "Username", "IsActive", "Profile.Name"]
        seen.update({r[0]: r for r in rows[1:]})
    assert set(seen) == set(users)
    some_id = next(iter(users))
    assert seen[some_id][1] == users[some_id]["Username"]
    assert seen[some_id][2] == ("true" if users[some_id]["IsActive"] else "false")
