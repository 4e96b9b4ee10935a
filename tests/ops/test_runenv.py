import stat

from ops.runenv import read_env_file, write_env_file


def test_run_env_file_round_trips_values_with_awkward_characters(tmp_path):
    path = tmp_path / "var" / "run.env"
    values = {"IDSYNC_REDIS_URL": "redis://127.0.0.1:6400/0", "IDSYNC_X": 'a "quoted" value with spaces #'}
    write_env_file(path, values)
    assert read_env_file(path) == values


def test_run_env_file_is_private_and_replaced_atomically(tmp_path):
    path = tmp_path / "run.env"
    write_env_file(path, {"A": "1"})
    write_env_file(path, {"A": "2"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == {"A": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.env"]  # no temp files left behind
