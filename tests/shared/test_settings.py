import subprocess
import sys

import pytest

from shared.settings import SettingsError, load_settings


def test_defaults_need_no_configuration_and_mean_sandbox_mode():
    settings = load_settings(_env_file=None)
    assert not settings.tenant_configured
    assert settings.webhook_url == "http://127.0.0.1:8080"


def test_secrets_are_secret_strings_that_never_print():
    settings = load_settings(_env_file=None, graph_client_secret="s3cret-value", sf_client_secret="other-secret",
                             graph_authority="https://login.example/t", graph_tenant_id="t", graph_client_id="c",
                             sf_url="https://acme.my.example", sf_client_id="sc")
    assert "s3cret-value" not in repr(settings) and "other-secret" not in str(settings)
    assert settings.graph_client_secret.get_secret_value() == "s3cret-value"


def test_half_a_tenant_is_an_error_naming_the_missing_setting():
    with pytest.raises(SettingsError, match="IDSYNC_GRAPH_CLIENT_SECRET is missing"):
        load_settings(_env_file=None, graph_authority="https://login.example/t", graph_tenant_id="t",
                      graph_client_id="c")


def test_a_wrong_type_names_the_setting():
    with pytest.raises(SettingsError, match="^IDSYNC_WEBHOOK_PORT: "):
        load_settings(_env_file=None, webhook_port="eighty")


def test_visibility_timeout_must_exceed_every_delay_a_task_can_hold():
    with pytest.raises(SettingsError, match="IDSYNC_VISIBILITY_TIMEOUT_S must exceed"):
        load_settings(_env_file=None, visibility_timeout_s=100, task_time_limit_s=300)


def test_a_bad_setting_stops_the_cli_with_one_line_naming_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ops", "status"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "IDSYNC_WEBHOOK_PORT": "eighty"}, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("idsync: invalid setting IDSYNC_WEBHOOK_PORT")
