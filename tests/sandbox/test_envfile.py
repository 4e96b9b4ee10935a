"""The dotenv hand-off file written by `python -m sandbox`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from sandbox.envfile import read_env_file, render_env, write_env_file

SAMPLE = {
    "IDSYNC_GRAPH_URL": "https://127.0.0.1:8443/v1.0",
    "IDSYNC_GRAPH_CLIENT_SECRET": "a-b_c~d.e",
    "IDSYNC_CA_BUNDLE": "/tmp/with space/ca.pem",
    "IDSYNC_SF_URL": "https://[::1]:8443",
    "ODD": "it's a \"quoted\" \\ value $HOME",
}


def test_the_env_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = write_env_file(tmp_path / "sandbox.env", SAMPLE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_values_read_back_unchanged_with_our_reader_and_with_python_dotenv(tmp_path: Path) -> None:
    path = write_env_file(tmp_path / "sandbox.env", SAMPLE)
    assert read_env_file(path) == SAMPLE
    assert dotenv_values(path, interpolate=False) == SAMPLE


def test_rewriting_replaces_the_file_whole_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "sandbox.env"
    write_env_file(target, {"A": "1", "B": "2"})
    write_env_file(target, {"A": "3"})
    assert read_env_file(target) == {"A": "3"}
    assert [p.name for p in target.parent.iterdir()] == ["sandbox.env"]


def test_the_file_starts_with_a_comment_saying_who_wrote_it(tmp_path: Path) -> None:
    path = write_env_file(tmp_path / "x.env", {"A": "1"})
    assert path.read_text().startswith("# written by `python -m sandbox`")


def test_values_with_line_breaks_and_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        render_env({"A": "x\ny"})
    with pytest.raises(ValueError, match="variable name"):
        render_env({"1A": "x"})
