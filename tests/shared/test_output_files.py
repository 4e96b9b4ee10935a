"""A report file is checked before a command does its work: a known extension, an existing directory that may be
written in, not a directory itself. Nothing is created by the check, a missing directory included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.output_files import OutputPathError, check_output, output_problem

FORMATS = (".json", ".csv", ".html")


def test_a_new_file_in_an_existing_directory_is_fine(tmp_path: Path) -> None:
    assert output_problem(tmp_path / "plan.html", FORMATS) is None
    (tmp_path / "old.json").write_text("{}")
    assert output_problem(tmp_path / "old.json", FORMATS) is None  # replaced
    assert output_problem(tmp_path / "export.anything") is None  # no formats: any extension


def test_the_extension_must_name_a_known_format(tmp_path: Path) -> None:
    assert output_problem(tmp_path / "plan.txt", FORMATS) == "the format comes from the extension: .json, .csv, .html"
    assert output_problem(tmp_path / "PLAN.HTML", FORMATS) is None


def test_a_missing_directory_is_named_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "plan.html"
    assert output_problem(target, FORMATS) == f"the directory {target.parent} does not exist (create it first)"
    assert not (tmp_path / "nonexistent").exists()


def test_a_parent_that_is_a_file_is_named_even_further_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("plan.json").write_text("{}")
    assert output_problem(Path("plan.json/x.html"), FORMATS) == "plan.json is a file, not a directory"
    assert output_problem(Path("plan.json/a/b/x.html"), FORMATS) == "plan.json is a file, not a directory"


def test_a_directory_is_not_a_file_name(tmp_path: Path) -> None:
    (tmp_path / "reports.html").mkdir()
    assert output_problem(tmp_path / "reports.html", FORMATS) == "is a directory; give a file name in it"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_directory_or_file_that_may_not_be_written_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "kept.csv").write_text("")
    (locked / "kept.csv").chmod(0o444)
    locked.chmod(0o555)
    try:
        assert output_problem(locked / "new.csv", FORMATS) == f"cannot create a file in {locked} (permission denied)"
        kept = locked / "kept.csv"
        assert output_problem(kept, FORMATS) == f"{kept} is not writable (permission denied)"
    finally:
        locked.chmod(0o755)


def test_check_output_names_the_option_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError) as err:
        check_output(tmp_path / "plan.pdf", "--report", FORMATS)
    assert str(err.value) == (f"--report {tmp_path / 'plan.pdf'}: the format comes from the extension: .json, .csv, "
                              ".html")
