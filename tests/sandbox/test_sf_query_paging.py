"""`run_query` / `query_more` (what the query routes and composite call) against a real in-memory Org, no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.salesforce.api import SalesforceApiError
from sandbox.salesforce.org import Org, make_id
from sandbox.salesforce.query_routes import cursors, query_more, run_query
from sandbox.state import SandboxState


@pytest.fixture
def state(tmp_path: Path) -> SandboxState:
    st = SandboxState(state_dir=tmp_path)
    st.org = Org(clock=st.clock, config=st.config, lock=st.lock)
    return st


def load_accounts(state: SandboxState, n: int, *, prefix: str = "acct") -> list[str]:
    org = state.org
    fields = list(org.schema["Account"].fields)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        rec: dict[str, Any] = dict.fromkeys(fields)
        rec.update(Id=make_id("001", 1000 + i), Name=f"{prefix}-{i:05d}", IsDeleted=False)
        rows.append(rec)
    org.bulk_load("Account", rows)
    return [r["Id"] for r in rows]


def locator_of(body: dict[str, Any]) -> str:
    return body["nextRecordsUrl"].rsplit("/", 1)[1]


def test_pages_follow_the_requested_batch_size_and_cover_every_row_once(state: SandboxState) -> None:
    ids = load_accounts(state, 4500)
    first = run_query(state, "SELECT Id FROM Account", include_deleted=False, version="62.0", batch_size=2000)
    assert (first["totalSize"], first["done"], len(first["records"])) == (4500, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")
    second = query_more(state, locator_of(first), "62.0")
    third = query_more(state, locator_of(second), "62.0")
    assert (len(second["records"]), len(third["records"]), third["done"]) == (2000, 500, True)
    assert "nextRecordsUrl" not in third
    seen = [r["Id"] for page in (first, second, third) for r in page["records"]]
    assert seen == ids


def test_batch_size_is_clamped_to_200_through_2000(state: SandboxState) -> None:
    load_accounts(state, 2500)
    small = run_query(state, "SELECT Id FROM Account", include_deleted=False, version="62.0", batch_size=10)
    big = run_query(state, "SELECT Id FROM Account", include_deleted=False, version="62.0", batch_size=5000)
    assert (len(small["records"]), len(big["records"])) == (200, 2000)


def test_server_batch_cap_lowers_pages_below_the_client_request(state: SandboxState) -> None:
    load_accounts(state, 10)
    state.config.set("salesforce.query_batch_size", 4)
    body = run_query(state, "SELECT Id FROM Account", include_deleted=False, version="62.0")
    assert len(body["records"]) == 4 and body["nextRecordsUrl"].endswith("-4")


def test_query_all_pages_point_at_the_query_all_resource(state: SandboxState) -> None:
    load_accounts(state, 300)
    body = run_query(state, "SELECT Id FROM Account", include_deleted=True, version="60.0", batch_size=200)
    assert body["nextRecordsUrl"].startswith("/services/data/v60.0/queryAll/01g")


def test_a_query_that_fits_one_page_opens_no_cursor(state: SandboxState) -> None:
    load_accounts(state, 3)
    body = run_query(state, "SELECT Id FROM Account", include_deleted=False, version="62.0")
    assert body["done"] is True and "nextRecordsUrl" not in body
    assert len(cursors(state)) == 0


def test_cursor_is_a_snapshot_of_the_matches_at_query_time(state: SandboxState) -> None:
    load_accounts(state, 250)
    first = run_query(state, "SELECT Id, Name FROM Account WHERE Name LIKE 'acct-%'", include_deleted=False,
                      version="62.0", batch_size=200)
    load_accounts(state, 5, prefix="late")  # later inserts do not shift or extend the open cursor
    rest = query_more(state, locator_of(first), "62.0")
    assert len(rest["records"]) == 50 and rest["totalSize"] == 250


def test_cursors_expire_after_fifteen_idle_minutes_of_sandbox_time(state: SandboxState) -> None:
    load_accounts(state, 450)
    first = run_query(state, "SELECT Id FROM Account", include_deleted=False, version="62.0", batch_size=200)
    state.clock.advance(14 * 60)
    second = query_more(state, locator_of(first), "62.0")  # use keeps it alive
    state.clock.advance(14 * 60)
    query_more(state, locator_of(second), "62.0")
    state.clock.advance(15 * 60 + 1)
    with pytest.raises(SalesforceApiError) as info:
        query_more(state, locator_of(second), "62.0")
    assert (info.value.status, info.value.error_code) == (400, "INVALID_QUERY_LOCATOR")


@pytest.mark.parametrize("locator", ["garbage", "01gAAAAAAAAAAAAAAA-0", "01gAAAAAAAAAAAAAAA"])
def test_unknown_locators_are_invalid_query_locator(state: SandboxState, locator: str) -> None:
    with pytest.raises(SalesforceApiError) as info:
        query_more(state, locator, "62.0")
    assert info.value.error_code == "INVALID_QUERY_LOCATOR"


def test_bad_soql_becomes_a_400_with_the_soql_error_code(state: SandboxState) -> None:
    with pytest.raises(SalesforceApiError) as info:
        run_query(state, "SELECT Id FROM Nope", include_deleted=False, version="62.0")
    assert (info.value.status, info.value.error_code) == (400, "INVALID_TYPE")
    assert info.value.body()[0]["message"].startswith("\nSELECT Id FROM Nope\n")
    with pytest.raises(SalesforceApiError) as info:
        run_query(state, "", include_deleted=False, version="62.0")
    assert info.value.error_code == "MALFORMED_QUERY"


def test_count_answers_with_total_size_only(state: SandboxState) -> None:
    load_accounts(state, 2500)
    body = run_query(state, "SELECT COUNT() FROM Account", include_deleted=False, version="62.0")
    assert body == {"totalSize": 2500, "done": True, "records": []}
