"""`idsync reconcile` and `idsync access report` as a new user meets them: a report path that cannot be written is
refused in one line before anything runs (nothing applied, no directory created); a report that still fails after
a real run leaves the run's own copies written and says the run completed; the summary tells users needing a
person from review items."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from ops.embedded_redis import free_port
from shared.reconcile.reports import ReportData
from shared.reconcile.run_state import RunLog


def _idsync(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing listens on this Redis: a command that got past its path check would fail on it (exit 1), not exit 2.
    env = {"PATH": "/usr/bin:/bin", "IDSYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=60)


def _refused(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr == f"idsync: {line}\n"


def test_a_report_under_a_file_stops_a_real_run_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"kept": true}')
    result = _idsync(tmp_path, "reconcile", "--report", "plan.json/x.html")
    _refused(result, "--report plan.json/x.html: plan.json is a file, not a directory")
    assert (tmp_path / "plan.json").read_text() == '{"kept": true}'
    assert not (tmp_path / "var").exists()  # no run, no run copies


def test_a_report_in_a_missing_directory_is_refused_and_the_directory_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "plan.html"
    result = _idsync(tmp_path, "reconcile", "--dry-run", "--report", str(target))
    _refused(result, f"--report {target}: the directory {target.parent} does not exist (create it first)")
    assert not (tmp_path / "nonexistent").exists()


def test_every_report_is_checked_before_the_run_not_only_the_first(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    _refused(_idsync(tmp_path, "reconcile", "--report", "ok.json", "--report", "out"),
             "--report out: the format comes from the extension: .json, .csv, .html")
    _refused(_idsync(tmp_path, "reconcile", "--report", "ok.json", "--report", "out.d/plan.csv"),
             "--report out.d/plan.csv: the directory out.d does not exist (create it first)")
    (tmp_path / "dir.json").mkdir()
    _refused(_idsync(tmp_path, "reconcile", "--report", "dir.json"),
             "--report dir.json: is a directory; give a file name in it")
    assert not (tmp_path / "ok.json").exists()


@pytest.mark.parametrize(("output", "line"), [
    ("nonexistent/dir/a.html", "--output nonexistent/dir/a.html: the directory nonexistent/dir does not exist "
                               "(create it first)"),
    ("access.pdf", "--output access.pdf: the format comes from the extension: .html, .csv"),
])
def test_access_report_checks_its_output_before_reading_anything(tmp_path: Path, output: str, line: str) -> None:
    _refused(_idsync(tmp_path, "access", "report", "--output", output), line)
    assert not (tmp_path / "nonexistent").exists()


def _runlog(dry_run: bool = False) -> RunLog:
    run = RunLog("rec-20261130T080000Z-abcdef", dry_run=dry_run)
    review = {"entra_id": "e2", "upn": "b@x", "code": "INACTIVE_IN_SALESFORCE", "target": "IsActive",
              "message": "switched off in Salesforce"}
    run.record("e1", "create", {"changes": [], "reviews": [], "deprovisions": []})
    run.record("e2", "unchanged", {"changes": [], "reviews": [review], "deprovisions": []})
    run.finish()
    return run


def test_a_report_failing_after_a_real_run_leaves_the_run_s_copies_and_says_the_run_completed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli.reconcile import _write_all

    folder = tmp_path / "var" / "reconcile"
    gone = tmp_path / "removed-meanwhile" / "plan.html"  # passed the check, then its directory went away
    with pytest.raises(typer.Exit) as stopped:
        _write_all(ReportData.of(_runlog()), SimpleNamespace(reconcile_reports=folder), [gone], dry_run=False)
    assert stopped.value.exit_code == 1
    out, err = capsys.readouterr()
    assert err == (f"idsync: the run rec-20261130T080000Z-abcdef completed, but {gone} was not written: No such "
                   "file or directory — check the path and its permissions\n")
    own = [folder / "rec-20261130T080000Z-abcdef.json", folder / "rec-20261130T080000Z-abcdef.html"]
    assert all(path.is_file() for path in own)
    assert json.loads(own[0].read_text())["run_id"] == "rec-20261130T080000Z-abcdef"
    assert [line for line in out.splitlines() if line.startswith("report: ")] == [f"report: {p}" for p in own]


def test_the_summary_tells_users_needing_a_person_from_review_items(capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli.reconcile import _print_summary, summary_rows

    data = ReportData.of(_runlog())
    users, items = summary_rows(data.summary())
    assert users == [("create", 1), ("update", 0), ("deprovision", 0), ("review", 0), ("unchanged", 1)]
    assert dict(users) == data.summary()["counts"]  # the JSON report's counts, row for row
    assert items == [("changes", 0), ("direct Salesforce edits", 0), ("review items", 1), ("failures", 0)]
    _print_summary(data, dry_run=False)
    table = capsys.readouterr().out
    assert "review items" in table and "users by plan" in table
    assert not any(line.split("│")[1:2] == [" reviews "] for line in table.splitlines())


def test_the_printed_plan_says_what_a_new_user_gets_not_only_their_username(capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli.reconcile import _print_plan

    run = RunLog("rec-20261130T080000Z-abcdef", dry_run=True)
    change = {"entra_id": "e1", "salesforce_id": None, "upn": "ann@x", "action": "create", "change": "create_user",
              "field": "User", "before": None, "direct_edit": False, "drift": "missing_in_salesforce", "rule": "scope",
              "after": {"Username": "ann@x", "ProfileId": "Sales User", "UserRoleId": "CEO", "Title": "Analyst"}}
    run.record("e1", "create", {"changes": [change], "reviews": [], "deprovisions": []})
    run.finish()
    _print_plan(ReportData.of(run))
    out = capsys.readouterr().out
    assert "ann@x ProfileId=Sales User UserRoleId=CEO" in out
