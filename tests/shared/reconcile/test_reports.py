"""The three report formats carry the same numbers, and the HTML page renders in a real browser without a single
console message."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from shared.reconcile.reports import ReportData, write_reports
from tests.shared.reconcile.browser import render
from tests.shared.reconcile.conftest import reconcile


def _from_csv(path: Path) -> dict[str, Any]:
    summary: dict[str, dict[str, int]] = {"counts": {}, "totals": {}, "drift_by_field": {}}
    sections: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["section"] != "summary":
                sections[row["section"]] = sections.get(row["section"], 0) + 1
                continue
            kind, _, name = row["field"].partition(":")
            target = {"count": "counts", "total": "totals", "drift": "drift_by_field"}.get(kind)
            if target:
                summary[target][name] = int(row["after"])
    return {**summary, "sections": sections}


def _from_html(dom: str) -> dict[str, dict[str, int]]:
    def grab(attribute: str) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in re.finditer(rf'data-{attribute}="([^"]+)"[^>]*>(\d+)<', dom)}

    return {"counts": grab("count"), "totals": grab("total"), "drift_by_field": grab("drift")}


def test_json_csv_and_html_carry_the_same_numbers(sandbox, deps, tmp_path) -> None:
    run = reconcile(deps, dry_run=True)
    paths = [tmp_path / "plan.json", tmp_path / "plan.csv", tmp_path / "plan.html"]
    write_reports(ReportData.of(run), paths)

    as_json = json.loads(paths[0].read_text())
    as_csv = _from_csv(paths[1])
    dom, console = render(paths[2])
    as_html = _from_html(dom)

    assert as_json["run_id"] == run.run_id and as_json["dry_run"] is True
    assert set(as_json["counts"]) >= {"create", "update", "deprovision", "review", "unchanged"}
    assert as_json["counts"]["update"] > 0 and as_json["drift_by_field"]
    for key in ("counts", "totals", "drift_by_field"):
        assert as_json[key] == as_csv[key] == as_html[key], key
    assert as_csv["sections"].get("change", 0) == len(as_json["changes"]) == as_json["totals"]["changes"]
    assert as_csv["sections"].get("deprovision", 0) == len(as_json["deprovisions"])
    for change in as_json["changes"]:
        assert {"entra_id", "salesforce_id", "action", "field", "before", "after"} <= set(change)
    assert "<svg" in dom and run.run_id in dom
    assert console == []


def test_the_browser_check_sees_console_errors(tmp_path) -> None:
    """The check above can fail: a page that logs an error is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><head><link rel="icon" href="data:,"></head><body>'
                    "<script>console.error('broken report')</script></body></html>")
    _dom, console = render(page)
    assert any("broken report" in line for line in console)
