"""Audit and metrics settings: sinks are listed the way operators write them, and a sink without its address stops
start-up with one line naming the missing setting."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings


def test_sinks_are_a_comma_separated_list_or_json_and_default_to_jsonl(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).audit_sinks == ["jsonl"]
    monkeypatch.setenv("IDSYNC_AUDIT_SINKS", "jsonl, postgres")
    monkeypatch.setenv("IDSYNC_AUDIT_POSTGRES_URL", "postgresql://localhost/idsync")
    assert load_settings(_env_file=None).audit_sinks == ["jsonl", "postgres"]
    monkeypatch.setenv("IDSYNC_AUDIT_SINKS", '["postgres"]')
    assert load_settings(_env_file=None).audit_sinks == ["postgres"]


@pytest.mark.parametrize(("sinks", "env", "named"), [
    ("jsonl,kafka", {}, "IDSYNC_AUDIT_SINKS"),
    ("postgres", {}, "IDSYNC_AUDIT_POSTGRES_URL"),
    ("syslog", {}, "IDSYNC_AUDIT_SYSLOG_URL"),
    ("syslog", {"IDSYNC_AUDIT_SYSLOG_URL": "udp://siem:514"}, "IDSYNC_AUDIT_SYSLOG_URL"),
    ("splunk_hec", {"IDSYNC_AUDIT_SPLUNK_HEC_URL": "https://splunk:8088"}, "IDSYNC_AUDIT_SPLUNK_HEC_TOKEN"),
])
def test_a_sink_without_what_it_needs_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, sinks: str, env: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("IDSYNC_AUDIT_SINKS", sinks)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_the_trail_directory_defaults_under_var(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("IDSYNC_VAR_DIR", str(tmp_path))
    assert load_settings(_env_file=None).audit_trail_dir == tmp_path / "audit"
    monkeypatch.setenv("IDSYNC_AUDIT_DIR", "/srv/audit")
    assert str(load_settings(_env_file=None).audit_trail_dir) == "/srv/audit"
