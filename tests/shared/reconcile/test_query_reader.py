"""How reconciliation chooses between REST pages and a Bulk API 2.0 query job for each Salesforce query, against
scripted clients (the sandbox round trip is in test_bulk_reads.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shared.errors import SERVICE_SALESFORCE
from shared.reconcile.salesforce_side import QueryReader
from shared.salesforce_bulk_query import BulkQueryUnavailable


class Rest:
    """A REST query resource over `total` rows, 2,000 per page; counts its calls like the real client."""

    def __init__(self, total: int) -> None:
        self.rows = [{"Id": f"005{n:06d}"} for n in range(total)]
        self.calls = 0

    def query_page(self, soql: str) -> dict[str, Any]:
        self.calls += 1
        return self._page(0)

    def more_pages(self, page: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        while not page["done"]:
            self.calls += 1
            page = self._page(int(page["nextRecordsUrl"]))
            yield page["records"]

    def query_pages(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        first = self.query_page(soql)
        yield first["records"]
        yield from self.more_pages(first)

    def _page(self, start: int) -> dict[str, Any]:
        end = start + 2000
        return {"totalSize": len(self.rows), "records": self.rows[start:end], "done": end >= len(self.rows),
                "nextRecordsUrl": str(end)}


class Job:
    """A query job that returns every row in one results call, or is refused."""

    def __init__(self, rest: Rest, refuse: bool = False) -> None:
        self.rest, self.refuse = rest, refuse
        self.calls = 0
        self.asked: list[str] = []

    def pages(self, soql: str, types: Mapping[str, str] | None = None) -> Iterator[list[dict[str, Any]]]:
        self.asked.append(soql)
        self.calls = 1
        if self.refuse:
            raise BulkQueryUnavailable("Bulk API is not enabled", service=SERVICE_SALESFORCE)
        self.calls = 3
        yield list(self.rest.rows)


def read(reader: QueryReader) -> list[str]:
    return [r["Id"] for page in reader.pages("SELECT Id FROM User") for r in page]


def test_a_result_on_one_rest_page_costs_that_one_call_whatever_the_threshold() -> None:
    rest = Rest(1500)
    job = Job(rest)

    assert len(read(QueryReader(rest, job, bulk_threshold=10))) == 1500
    assert (rest.calls, job.asked) == (1, [])


def test_a_result_up_to_the_threshold_is_read_in_rest_pages() -> None:
    rest = Rest(9000)
    job = Job(rest)

    assert len(read(QueryReader(rest, job, bulk_threshold=10_000))) == 9000
    assert (rest.calls, job.asked) == (5, [])


def test_a_result_above_the_threshold_is_read_by_one_job_after_the_first_page_told_its_size() -> None:
    rest = Rest(25_000)
    job = Job(rest)
    reader = QueryReader(rest, job, bulk_threshold=10_000)

    ids = read(reader)

    assert ids == [r["Id"] for r in rest.rows]  # every row once: the first REST page is dropped, not added
    assert (rest.calls, job.asked, reader.bulk_queries, reader.bulk_calls) == (1, ["SELECT Id FROM User"], 1, 3)


def test_a_refused_job_falls_back_to_the_rest_pages_after_the_first_without_losing_or_repeating_a_row() -> None:
    rest = Rest(25_000)
    reader = QueryReader(rest, Job(rest, refuse=True), bulk_threshold=10_000)

    ids = read(reader)

    assert ids == [r["Id"] for r in rest.rows]
    assert (rest.calls, reader.bulk_queries, reader.bulk_calls) == (13, 0, 1)


def test_without_a_job_reader_every_query_is_rest_pages() -> None:
    rest = Rest(25_000)

    assert len(read(QueryReader(rest))) == 25_000
    assert rest.calls == 13
