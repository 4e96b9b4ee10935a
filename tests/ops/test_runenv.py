"""`var/run.env` and the other private files idsync writes (Flower's password): atomic, and 0600 from the first byte,
whatever the umask; URLs with a password are shown with `***`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ops.cli.service import _generated_flower_password
from ops.runenv import redacted_url, write_env_file, write_private_file
from shared.settings_sources import read_env_values


def test_run_env_file_round_trips_values_with_awkward_characters(tmp_path):
    path = tmp_path / "var" / "run.env"
    values = {"IDSYNC_REDIS_URL": "redis://:pw-_x@127.0.0.1:6400/0", "IDSYNC_X": 'a "quoted" value with spaces #'}
    write_env_file(path, values)
    assert read_env_values(path) == values


def test_run_env_file_is_private_and_replaced_atomically(tmp_path):
    path = tmp_path / "run.env"
    write_env_file(path, {"A": "1"})
    write_env_file(path, {"A": "2"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_values(path) == {"A": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.env"]  # no temp files left behind


@pytest.fixture
def open_umask():
    """The most permissive umask: a file created with default permissions would be world-readable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def publications(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str]]:
    """(name, mode, content) of every file at the moment it is renamed into place: a file written in place (create,
    then chmod) never shows up here, and one renamed with a wider mode shows that mode."""
    seen: list[tuple[str, int, str]] = []
    real_replace = os.replace

    def spying_replace(src, dst):
        seen.append((Path(dst).name, stat.S_IMODE(os.stat(src).st_mode), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    return seen


def test_a_private_file_is_never_visible_under_its_name_with_other_permissions_than_0600(
    tmp_path, publications, open_umask
):
    path = tmp_path / "secret"
    write_private_file(path, "s3cret\n")
    assert publications == [("secret", 0o600, "s3cret\n")]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "s3cret\n"


def test_the_generated_flower_password_file_is_private_and_kept_across_restarts(tmp_path, publications, open_umask):
    pw_file = tmp_path / "var" / "flower.password"
    first = _generated_flower_password(pw_file)
    assert publications == [("flower.password", 0o600, first + "\n")], "complete and private before it is visible"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert pw_file.read_text() == first + "\n" and len(first) >= 16
    assert _generated_flower_password(pw_file) == first  # a restarted Flower keeps the operator's password


def test_a_flower_password_file_readable_by_others_is_replaced_by_a_new_private_one(tmp_path: Path):
    pw_file = tmp_path / "flower.password"
    pw_file.write_text("leaked\n")
    pw_file.chmod(0o644)
    fresh = _generated_flower_password(pw_file)
    assert fresh != "leaked"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert pw_file.read_text() == fresh + "\n"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6400/0", "redis://:***@127.0.0.1:6400/0"),
        ("redis://user:s3cret@redis.internal:6379/2", "redis://:***@redis.internal:6379/2"),
        ("rediss://:s3cret@[::1]:6380/0", "rediss://:***@[::1]:6380/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str):
    assert redacted_url(url) == shown
    assert "s3cret" not in redacted_url(url)
