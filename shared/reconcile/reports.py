"""A run's report in three formats with the same numbers: JSON (for tools), CSV (for a spreadsheet), HTML (for a
person). The format follows the file's extension.

All three are written from one `ReportData` (summary figures computed once, rows streamed from the run's state), so
they cannot disagree: the JSON's `counts` are the CSV's `summary` rows and the HTML's summary cards.

JSON: `run_id`, `dry_run`, `counts` (`create`, `update`, `deprovision`, `review`, `unchanged`, and `ignored`,
`skipped`, `salesforce_only`, `guests` when any), `totals`, `drift_by_field`, `calls`, `guard`, and the rows:
`changes` (one object per change: `entra_id`, `salesforce_id`, `action`, `field`, `before`, `after`, plus `upn`,
`change`, `rule`, `drift`, `direct_edit` and, for a direct edit, `modified_by`, `modified_by_name`, `modified_at`),
`reviews`, `deprovisions`, `failures`, `salesforce_only`.
CSV: one table with a `section` column (`summary`, `change`, `review`, `deprovision`, `failure`, `salesforce_only`).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.output_files import OutputPathError, check_output
from shared.reconcile.run_state import COUNT_KEYS, ROW_LISTS, RunLog

FORMATS = (".json", ".csv", ".html")
CSV_COLUMNS = ("section", "entra_id", "salesforce_id", "upn", "action", "change", "field", "before", "after",
               "drift", "direct_edit", "modified_by", "modified_at", "rule", "code", "message")


#: A report path refused before the run (an unknown extension, a missing directory...): `OutputPathError`.
ReportFormatError = OutputPathError


def check_paths(paths: list[Path]) -> None:
    """Refuse a report that could not be written (unknown extension, missing or unwritable directory, a directory
    given as the file) before the run starts, not after it. Nothing is created."""
    for path in paths:
        check_output(path, "--report", FORMATS)


@dataclass
class ReportData:
    """The figures of a run, computed once, and access to its rows."""

    runlog: RunLog
    meta: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    drift_by_field: dict[str, int] = field(default_factory=dict)
    drift_by_kind: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, runlog: RunLog) -> ReportData:
        data = cls(runlog, meta=runlog.meta(), counts=runlog.counts())
        by_field: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        direct = 0
        for row in runlog.rows("changes"):
            by_kind[row["drift"]] += 1
            if row["drift"] in ("field", "entitlement"):
                by_field[row["field"]] += 1
            direct += bool(row.get("direct_edit"))
        data.drift_by_field = dict(sorted(by_field.items(), key=lambda kv: (-kv[1], kv[0])))
        data.drift_by_kind = dict(sorted(by_kind.items()))
        data.totals = {"changes": runlog.row_count("changes"), "direct_edits": direct,
                       **{name: runlog.row_count(name) for name in ROW_LISTS if name != "changes"}}
        return data

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        return self.runlog.rows(name)

    def summary(self) -> dict[str, Any]:
        meta = self.meta
        calls = meta.get("calls")
        guard = meta.get("guard")
        return {
            "run_id": self.runlog.run_id,
            "dry_run": self.runlog.dry_run,
            "status": meta.get("status", "done" if self.runlog.dry_run else "running"),
            "scope": self.runlog.scope,
            "started_at": meta.get("started_at"),
            "finished_at": meta.get("finished_at"),
            "seconds": _number(meta.get("seconds")),
            "counts": {**{key: 0 for key in COUNT_KEYS}, **self.counts},
            "totals": self.totals,
            "drift_by_field": self.drift_by_field,
            "drift_by_kind": self.drift_by_kind,
            "calls": json.loads(calls) if isinstance(calls, str) else calls,
            "guard": json.loads(guard) if isinstance(guard, str) else guard,
        }


def _number(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def write_reports(data: ReportData, paths: list[Path]) -> list[Path]:
    """Write each report; the directories must exist (`check_paths` says so before a run; a caller writing to its own
    folder creates it)."""
    for path in paths:
        if path.suffix.lower() not in FORMATS:
            raise ReportFormatError(f"--report {path}: the format comes from the extension: {', '.join(FORMATS)}")
        suffix = path.suffix.lower()
        if suffix == ".json":
            write_json(data, path)
        elif suffix == ".csv":
            write_csv(data, path)
        else:
            from shared.reconcile.report_html import write_html

            write_html(data, path)
    return paths


def write_json(data: ReportData, path: Path) -> None:
    """Streamed row by row: a run with 100,000 changes never builds the document in memory."""
    summary = data.summary()
    with open(path, "w", encoding="utf-8") as out:
        head = json.dumps(summary, indent=2, default=str, ensure_ascii=False)
        out.write(head[:-2] + ",\n")  # reopen the object: the row lists follow
        for n, name in enumerate(ROW_LISTS):
            out.write(f'  "{name}": [')
            wrote = False
            for row in data.rows(name):
                out.write((",\n    " if wrote else "\n    ") + json.dumps(row, default=str, ensure_ascii=False))
                wrote = True
            out.write("\n  ]" if wrote else "]")
            out.write(",\n" if n < len(ROW_LISTS) - 1 else "\n")
        out.write("}\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    return str(value)


def write_csv(data: ReportData, path: Path) -> None:
    summary = data.summary()
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerow({"section": "summary", "field": "run_id", "after": summary["run_id"]})
        writer.writerow({"section": "summary", "field": "dry_run", "after": str(summary["dry_run"]).lower()})
        for key, value in summary["counts"].items():
            writer.writerow({"section": "summary", "field": f"count:{key}", "after": value})
        for key, value in summary["totals"].items():
            writer.writerow({"section": "summary", "field": f"total:{key}", "after": value})
        for key, value in summary["drift_by_field"].items():
            writer.writerow({"section": "summary", "field": f"drift:{key}", "after": value})
        sections = {"changes": "change", "reviews": "review", "deprovisions": "deprovision", "failures": "failure",
                    "salesforce_only": "salesforce_only"}
        for name, section in sections.items():
            for row in data.rows(name):
                flat = {key: _cell(value) for key, value in row.items()}
                if name == "changes":
                    flat["direct_edit"] = "true" if row.get("direct_edit") else "false"
                    flat["modified_by"] = _cell(row.get("modified_by_name") or row.get("modified_by"))
                elif name == "reviews":
                    flat["field"] = _cell(row.get("target"))
                elif name == "failures":
                    flat["field"] = _cell(row.get("target"))
                elif name == "deprovisions":
                    flat["message"] = _cell(row.get("reason"))
                elif name == "salesforce_only":
                    flat["upn"] = _cell(row.get("username"))
                    flat["after"] = "active" if row.get("active") else "inactive"
                    flat["modified_by"] = _cell(row.get("last_modified_by"))
                    flat["modified_at"] = _cell(row.get("last_modified_at"))
                writer.writerow({"section": section, **flat})
