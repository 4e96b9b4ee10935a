"""The Bulk API 2.0 query reader, against a scripted API (the calls it makes, in order, and what it makes of the
answers); tests/shared/reconcile/test_bulk_reads.py runs it against the sandbox's query jobs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import SERVICE_SALESFORCE, PermanentError
from shared.salesforce_bulk_query import BulkQuery, BulkQueryUnavailable, typed_value


class Scripted:
    """Answers each call with the next scripted (text, headers) and records what was asked."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str, str | None]] = []

    def request_with_headers(self, method: str, path: str, *, body: str | None = None,
                             content_type: str = "application/json",
                             accept: str = "application/json") -> tuple[str, dict[str, str]]:
        self.asked.append((method, path, body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def job(state: str, **extra: Any) -> tuple[str, dict[str, str]]:
    return json.dumps({"id": "750000000000001AAA", "state": state, **extra}), {}


def reader(api: Scripted, **kwargs: Any) -> BulkQuery:
    return BulkQuery(api, sleep=lambda s: None, **kwargs)


def test_a_query_job_is_created_polled_until_complete_and_its_results_followed_to_the_last_locator() -> None:
    api = Scripted([job("UploadComplete"), job("InProgress"), job("JobComplete"),
                    ('"Id","IsActive"\n"005A","true"\n', {"sforce-locator": "MjAwMDA", "sforce-numberofrecords": "1"}),
                    ('"Id","IsActive"\n"005B","false"\n', {"sforce-locator": "null", "sforce-numberofrecords": "1"})])
    bulk = reader(api, max_records=2000)

    rows = [r for page in bulk.pages("SELECT Id, IsActive FROM User", {"IsActive": "boolean"}) for r in page]

    assert rows == [{"Id": "005A", "IsActive": True}, {"Id": "005B", "IsActive": False}]
    assert [(m, p) for m, p, _ in api.asked] == [
        ("POST", "jobs/query"), ("GET", "jobs/query/750000000000001AAA"), ("GET", "jobs/query/750000000000001AAA"),
        ("GET", "jobs/query/750000000000001AAA/results?maxRecords=2000"),
        ("GET", "jobs/query/750000000000001AAA/results?maxRecords=2000&locator=MjAwMDA"),
    ]
    assert json.loads(api.asked[0][2] or "{}") == {"operation": "query", "query": "SELECT Id, IsActive FROM User",
                                                    "contentType": "CSV", "columnDelimiter": "COMMA",
                                                    "lineEnding": "LF"}
    assert bulk.calls == 5


def test_results_are_cut_into_pages_of_the_asked_size_so_the_caller_folds_them_in_as_it_goes() -> None:
    csv_text = "Id\n" + "".join(f"005{n:03d}\n" for n in range(5))
    api = Scripted([job("UploadComplete"), job("JobComplete"), (csv_text, {"sforce-locator": "null"})])

    pages = list(reader(api).pages("SELECT Id FROM User", page_rows=2))

    assert [len(p) for p in pages] == [2, 2, 1]


def test_cells_are_typed_as_the_rest_query_resource_returns_them() -> None:
    assert typed_value("", "string") is None  # Salesforce stores no empty strings: an empty cell is a null
    assert typed_value("", "boolean") is None
    assert typed_value("TRUE", "boolean") is True
    assert typed_value("false", "boolean") is False
    assert typed_value("42", "int") == 42
    assert typed_value("12.5", "currency") == 12.5
    assert typed_value("2026-11-30T10:00:00.000Z", "datetime") == "2026-11-30T10:00:00.000+0000"
    assert typed_value("2026-11-30", "date") == "2026-11-30"
    assert typed_value("a,b \"c\"", None) == "a,b \"c\""
    assert typed_value("not a number", "double") == "not a number"


def test_quoted_commas_quotes_and_newlines_survive_the_csv() -> None:
    text = 'Id,Title\n"005A","Head of ""Sales"", EMEA\nand APAC"\n'
    api = Scripted([job("UploadComplete"), job("JobComplete"), (text, {"sforce-locator": "null"})])

    [page] = list(reader(api).pages("SELECT Id, Title FROM User"))

    assert page == [{"Id": "005A", "Title": 'Head of "Sales", EMEA\nand APAC'}]


def test_a_refused_job_is_unavailable_before_any_row_so_the_caller_can_read_over_rest() -> None:
    refused = PermanentError("Bulk API is not enabled", service=SERVICE_SALESFORCE, status=400,
                             code="FEATURENOTENABLED")
    api = Scripted([refused])

    with pytest.raises(BulkQueryUnavailable) as caught:
        next(reader(api).pages("SELECT Id FROM User"))

    assert caught.value.code == "FEATURENOTENABLED"


@pytest.mark.parametrize("state", ["Failed", "Aborted"])
def test_a_job_that_ends_without_completing_is_unavailable_with_its_message(state: str) -> None:
    api = Scripted([job("UploadComplete"), job(state, errorMessage="INVALID_FIELD: No such column 'Nope'")])

    with pytest.raises(BulkQueryUnavailable, match="No such column"):
        next(reader(api).pages("SELECT Nope FROM User"))


def test_a_job_that_outlives_the_timeout_is_unavailable_and_polls_back_off() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    api = Scripted([job("UploadComplete")] + [job("InProgress")] * 20)
    bulk = BulkQuery(api, sleep=sleep, clock=lambda: now[0], timeout_s=20.0, first_poll_s=0.5, max_poll_s=4.0)

    with pytest.raises(BulkQueryUnavailable, match="still InProgress"):
        next(bulk.pages("SELECT Id FROM User"))

    assert slept[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_every_status_poll_gives_the_caller_a_turn_so_a_run_can_renew_its_lock_while_the_org_queues_the_job() -> None:
    turns: list[int] = []
    api = Scripted([job("UploadComplete"), job("UploadComplete"), job("InProgress"), job("JobComplete"),
                    ("Id\n005A\n", {"sforce-locator": "null"})])
    bulk = BulkQuery(api, sleep=lambda s: None, on_wait=lambda: turns.append(len(api.asked)))

    list(bulk.pages("SELECT Id FROM User"))

    assert turns == [2, 3, 4]  # after each of the three polls, before the results are asked for
