"""`idsync mapping check` and `idsync mapping schema`, run as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", "mapping", *args], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)


def test_check_of_the_demo_mapping_says_ok(tmp_path: Path) -> None:
    result = _run(tmp_path, "check", str(DEMO))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"{DEMO}: ok (names not checked: no tenant configured")
    offline = _run(tmp_path, "check", "--offline", str(DEMO))
    assert offline.stdout == f"{DEMO}: ok (names not checked (--offline))\n"


def test_check_prints_every_problem_with_line_column_and_fix_and_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "mapping.yaml"
    broken.write_text("scope:\n  usr_types: [Member]\nattributes:\n  Title: {source: jobTitle, transforms: [lowr]}\n")
    result = _run(tmp_path, "check", str(broken))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{broken}:2:3: scope: unknown key 'usr_types' (fix: did you mean 'user_types'?)",
        f"{broken}:4:42: attributes.Title.transforms[0]: unknown transform 'lowr' (fix: did you mean 'lower'?)",
    ]
    assert result.stderr == f"{broken}: 2 problems\n"


def test_check_of_an_unreadable_file_is_one_line_on_stderr(tmp_path: Path) -> None:
    result = _run(tmp_path, "check", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"idsync: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n"


def test_schema_prints_the_json_schema_of_the_mapping(tmp_path: Path) -> None:
    result = _run(tmp_path, "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "idsync mapping"
    assert "group_rules" in schema["properties"] and "GroupRule" in schema["$defs"]
