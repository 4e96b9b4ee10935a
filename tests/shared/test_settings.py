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
    assert settings.graph_client_secret is not None
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


# --- where values come from ---------------------------------------------------------------------------------------

from shared.settings import (  # noqa: E402
    deployment_problems,
    gather_layers,
    load_checked_settings,
    unknown_name_warnings,
)
from tests.env_files import write_env  # noqa: E402

SANDBOX_ENV = {
    "IDSYNC_GRAPH_AUTHORITY": "https://127.0.0.1:8443/sandbox-tenant",
    "IDSYNC_GRAPH_URL": "https://127.0.0.1:8443/v1.0",
    "IDSYNC_GRAPH_TENANT_ID": "sandbox-tenant",
    "IDSYNC_GRAPH_CLIENT_ID": "sandbox-graph-app",
    "IDSYNC_GRAPH_CLIENT_SECRET": "sandbox-graph-secret",
    "IDSYNC_SF_URL": "https://127.0.0.1:8443",
    "IDSYNC_SF_CLIENT_ID": "sandbox-sf-app",
    "IDSYNC_SF_CLIENT_SECRET": "sandbox-sf-secret",
    "IDSYNC_CA_BUNDLE": "/nonexistent/sandbox-ca.pem",
    "IDSYNC_SANDBOX_ADMIN_URL": "https://127.0.0.1:8443",
    "IDSYNC_SANDBOX_ADMIN_TOKEN": "sandbox-admin-token",
}
REAL_TENANT = {
    "IDSYNC_GRAPH_AUTHORITY": "https://login.microsoftonline.com/real-tenant",
    "IDSYNC_GRAPH_TENANT_ID": "real-tenant",
    "IDSYNC_GRAPH_CLIENT_ID": "real-graph-app",
    "IDSYNC_GRAPH_CLIENT_SECRET": "real-graph-secret",
    "IDSYNC_SF_URL": "https://acme.my.salesforce.com",
    "IDSYNC_SF_CLIENT_ID": "real-sf-app",
    "IDSYNC_SF_CLIENT_SECRET": "real-sf-secret",
    "IDSYNC_WEBHOOK_PUBLIC_URL": "https://idsync.example.com",
    "IDSYNC_WEBHOOK_CLIENT_STATE": "a-long-random-client-state-value",
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory and no IDSYNC_* variables: only what the test writes counts."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("IDSYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_leftover_sandbox_env_never_overrides_the_tenant_configured_in_dot_env(workdir):
    write_env(workdir / ".env", REAL_TENANT)
    write_env(workdir / "var" / "sandbox.env", SANDBOX_ENV)
    settings = load_settings()
    assert settings.graph_client_id == "real-graph-app" and settings.sf_url == "https://acme.my.salesforce.com"
    # Nothing of the sandbox leaks in, not even the settings the real tenant leaves at their defaults.
    assert settings.graph_url == "https://graph.microsoft.com/v1.0"
    assert settings.ca_bundle is None and settings.sandbox_admin_url is None
    assert not settings.sandbox_mode


def test_the_sandbox_env_is_read_when_no_tenant_is_configured_at_all(workdir):
    write_env(workdir / ".env", {"IDSYNC_LOG_LEVEL": "debug"})
    write_env(workdir / "var" / "sandbox.env", SANDBOX_ENV)
    settings = load_settings()
    assert settings.graph_client_id == "sandbox-graph-app" and settings.sandbox_mode
    assert settings.log_level == "DEBUG"


def test_the_environment_beats_dot_env_which_beats_run_env(workdir, monkeypatch):
    write_env(workdir / "var" / "run.env", {"IDSYNC_REDIS_URL": "redis://run-env:1/0", "IDSYNC_FLOWER_PORT": "5001",
                                         "IDSYNC_WEBHOOK_PORT": "7001"})
    write_env(workdir / ".env", {"IDSYNC_REDIS_URL": "redis://dot-env:1/0", "IDSYNC_FLOWER_PORT": "5002"})
    monkeypatch.setenv("IDSYNC_REDIS_URL", "redis://environment:1/0")
    settings = load_settings()
    assert settings.redis_url == "redis://environment:1/0"
    assert settings.flower_port == 5002
    assert settings.webhook_port == 7001
    origins = {name: src.origin for name, src in gather_layers().values.items()}
    assert origins == {"IDSYNC_REDIS_URL": "env", "IDSYNC_FLOWER_PORT": ".env:2",
                       "IDSYNC_WEBHOOK_PORT": "var/run.env:3"}


def test_var_dir_decides_where_run_env_and_sandbox_env_are_read(workdir, monkeypatch):
    write_env(workdir / "state" / "run.env", {"IDSYNC_REDIS_URL": "redis://moved:1/0"})
    write_env(workdir / "state" / "sandbox.env", SANDBOX_ENV)
    write_env(workdir / "var" / "run.env", {"IDSYNC_REDIS_URL": "redis://default-var:1/0"})
    monkeypatch.setenv("IDSYNC_VAR_DIR", "state")
    settings = load_settings()
    assert settings.redis_url == "redis://moved:1/0" and settings.graph_client_id == "sandbox-graph-app"


def test_an_empty_value_counts_as_unset_and_does_not_mask_a_lower_layer(workdir):
    write_env(workdir / ".env", {"IDSYNC_GRAPH_CLIENT_ID": "", "IDSYNC_SF_URL": ""})
    write_env(workdir / "var" / "sandbox.env", SANDBOX_ENV)
    assert load_settings().graph_client_id == "sandbox-graph-app"


def test_one_tenant_setting_keeps_the_sandbox_out_and_the_error_names_what_is_missing(workdir, monkeypatch):
    write_env(workdir / "var" / "sandbox.env", SANDBOX_ENV)
    monkeypatch.setenv("IDSYNC_GRAPH_CLIENT_ID", "x")
    with pytest.raises(SettingsError) as err:
        load_checked_settings()
    assert str(err.value).startswith(
        "IDSYNC_GRAPH_AUTHORITY, IDSYNC_GRAPH_TENANT_ID, IDSYNC_GRAPH_CLIENT_SECRET are missing")


def test_graph_without_salesforce_is_refused_naming_the_salesforce_settings(workdir):
    write_env(workdir / ".env", {k: v for k, v in REAL_TENANT.items() if not k.startswith("IDSYNC_SF_")})
    write_env(workdir / "var" / "sandbox.env", SANDBOX_ENV)
    with pytest.raises(SettingsError, match="^IDSYNC_SF_URL, IDSYNC_SF_CLIENT_ID, IDSYNC_SF_CLIENT_SECRET are missing"):
        load_checked_settings()


def test_a_lone_graph_url_is_a_partial_tenant_too(workdir):
    write_env(workdir / ".env", {"IDSYNC_GRAPH_URL": "https://graph.microsoft.com/beta"})
    write_env(workdir / "var" / "sandbox.env", SANDBOX_ENV)
    with pytest.raises(SettingsError, match="IDSYNC_GRAPH_AUTHORITY.* missing .*IDSYNC_GRAPH_URL"):
        load_checked_settings()


def test_a_malformed_env_file_line_is_an_error_naming_the_file_and_line(workdir):
    (workdir / ".env").write_text("IDSYNC_LOG_LEVEL=INFO\n# fine\nIDSYNC_WEBHOOK_CLIENT_STATE: s3cret\n")
    with pytest.raises(SettingsError, match=r"^\.env:3: cannot parse"):
        load_settings()
    write_env(workdir / ".env", {})
    (workdir / "var").mkdir()
    (workdir / "var" / "run.env").write_text('IDSYNC_REDIS_URL="unterminated\n')
    with pytest.raises(SettingsError, match=r"^var/run\.env:1: cannot parse"):
        load_settings()


def test_a_real_tenant_as_documented_passes_the_deployment_checks(workdir):
    write_env(workdir / ".env", REAL_TENANT)
    settings = load_checked_settings()
    assert settings.tenant_configured and not settings.sandbox_mode


def test_a_real_tenant_refuses_the_default_client_state(workdir):
    write_env(workdir / ".env", {k: v for k, v in REAL_TENANT.items() if k != "IDSYNC_WEBHOOK_CLIENT_STATE"})
    with pytest.raises(SettingsError, match="^IDSYNC_WEBHOOK_CLIENT_STATE: still the published default"):
        load_checked_settings()


@pytest.mark.parametrize("name", ["IDSYNC_GRAPH_AUTHORITY", "IDSYNC_GRAPH_URL", "IDSYNC_SF_URL",
                                  "IDSYNC_WEBHOOK_PUBLIC_URL"])
def test_a_real_tenant_needs_https_for_every_url(workdir, name):
    values = {**REAL_TENANT, name: "http://plain.example.com/path"}
    write_env(workdir / ".env", values)
    with pytest.raises(SettingsError, match=f"^{name}:? .*https"):
        load_checked_settings()


def test_a_real_tenant_needs_a_public_webhook_url(workdir):
    write_env(workdir / ".env", {k: v for k, v in REAL_TENANT.items() if k != "IDSYNC_WEBHOOK_PUBLIC_URL"})
    with pytest.raises(SettingsError, match="^IDSYNC_WEBHOOK_PUBLIC_URL is missing"):
        load_checked_settings()


@pytest.mark.parametrize("host", ["login.salesforce.com", "test.salesforce.com", "LOGIN.salesforce.com"])
def test_a_real_tenant_refuses_salesforce_shared_login_hosts(workdir, host):
    write_env(workdir / ".env", {**REAL_TENANT, "IDSYNC_SF_URL": f"https://{host}"})
    with pytest.raises(SettingsError, match="^IDSYNC_SF_URL: .*My Domain"):
        load_checked_settings()


def test_the_sandbox_may_keep_the_default_client_state_and_its_own_https(workdir, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    write_env(workdir / "var" / "sandbox.env", {**SANDBOX_ENV, "IDSYNC_CA_BUNDLE": str(ca)})
    settings = load_checked_settings()
    assert settings.sandbox_mode and deployment_problems(settings) == []


def test_a_stray_sandbox_admin_url_does_not_exempt_a_real_tenant(workdir):
    write_env(workdir / ".env", {**REAL_TENANT, "IDSYNC_WEBHOOK_CLIENT_STATE": "change-me-client-state",
                              "IDSYNC_SANDBOX_ADMIN_URL": "https://127.0.0.1:8443"})
    with pytest.raises(SettingsError, match="IDSYNC_WEBHOOK_CLIENT_STATE"):
        load_checked_settings()


def test_a_missing_ca_bundle_file_is_named(workdir):
    write_env(workdir / ".env", {**REAL_TENANT, "IDSYNC_CA_BUNDLE": "/nonexistent/ca.pem"})
    with pytest.raises(SettingsError, match="^IDSYNC_CA_BUNDLE: /nonexistent/ca.pem is not a file"):
        load_checked_settings()


def test_unknown_names_are_warned_about_with_the_closest_setting(workdir, monkeypatch):
    write_env(workdir / ".env", {"IDSYNC_WEBHOOK_CLIENTSTATE": "x", "IDSYNC_RUN_WEBHOOK_URL": "http://ok"})
    monkeypatch.setenv("IDSYNC_LOG_LEVLE", "DEBUG")
    monkeypatch.setenv("IDSYNC_ZZZ", "1")
    monkeypatch.setenv("IDSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres")  # the suite's own
    warnings = unknown_name_warnings(gather_layers())
    assert warnings == [
        "idsync: warning: IDSYNC_LOG_LEVLE (environment) is not a setting; did you mean IDSYNC_LOG_LEVEL?",
        "idsync: warning: IDSYNC_ZZZ (environment) is not a setting; `idsync config` lists every setting",
        "idsync: warning: IDSYNC_WEBHOOK_CLIENTSTATE (.env:1) is not a setting; did you mean "
        "IDSYNC_WEBHOOK_CLIENT_STATE?",
    ]


def test_log_level_is_one_of_the_standard_levels_in_any_case():
    assert load_settings(_env_file=None, log_level="warning").log_level == "WARNING"
    with pytest.raises(SettingsError, match="^IDSYNC_LOG_LEVEL: Input should be 'DEBUG'"):
        load_settings(_env_file=None, log_level="LOUD")
