"""ops/prometheus and ops/grafana are checked like code: rules and dashboard parse, every alert is complete and names
its runbook section, and every series they query is one `shared.metrics` defines (so a renamed metric cannot silently
blank a panel or an alert). promtool checks the syntax too where it is installed (Debian's `prometheus` package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from shared.metrics import defined_series
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "ops" / "prometheus"
GRAFANA = ROOT / "ops" / "grafana"
#: Series Prometheus itself provides.
BUILTIN_SERIES = {"up"}
PROMQL_WORDS = {"by", "without", "and", "or", "unless", "bool", "offset", "on", "ignoring", "group_left",
                "group_right", "inf", "nan"}
#: The alerts the issue asks for, by what they watch.
REQUIRED_ALERTS = {
    "IdsyncRevocationP99OverTarget": "idsync_revocation_latency_seconds_bucket",
    "IdsyncDeadLetterQueueGrowing": "idsync_dlq_entries",
    "IdsyncAuditSinkBacklog": "idsync_audit_sink_lag_seconds",
    "IdsyncSalesforceApiUsageHigh": "idsync_salesforce_api_usage_ratio",
    "IdsyncNoRevocationWorker": "up",
    "IdsyncNoSyncWorker": "up",
    "IdsyncDeltaPollerStale": "idsync_delta_last_round_timestamp_seconds",
    "IdsyncGraphSubscriptionExpiring": "idsync_graph_subscription_expiry_timestamp_seconds",
    "IdsyncDeactivationsHeld": "idsync_guard_held_runs",
}


def series_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers, grouping clauses, strings and ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:ms|[smhdwy])?\b", "", text)  # numbers and durations ("offset 5m")
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group(0).lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group(0))
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "operations.md").read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_series_extraction_ignores_labels_functions_and_keywords() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 1 or vector(0) unless b offset 5m'
    assert series_in(expr) == {"a_bucket", "b"}


def test_every_alert_is_complete_and_points_at_its_runbook_section() -> None:
    anchors = runbook_anchors()
    names = set()
    for rule in rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, f"{rule['alert']}: no section #{anchor}"
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        names.add(rule["alert"])
    assert set(REQUIRED_ALERTS) <= names


def test_alerts_query_only_defined_metrics_and_each_watches_what_it_says() -> None:
    defined = defined_series() | BUILTIN_SERIES
    by_name = {rule["alert"]: rule for rule in rules()}
    for rule in rules():
        unknown = series_in(rule["expr"]) - defined
        assert not unknown, f"{rule['alert']} queries undefined series {unknown}"
    for alert, series in REQUIRED_ALERTS.items():
        assert series in series_in(by_name[alert]["expr"]), alert


def test_the_scrape_config_targets_every_component_on_its_default_port() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    defaults = Settings.model_fields
    for component in ("worker_revocation", "worker_sync", "beat", "poller", "audit_writer"):
        port = defaults[f"metrics_port_{component}"].default
        assert targets[f"idsync-{component.replace('_', '-')}"] == f"{component.replace('_', '-')}:{port}"
    assert targets["idsync-webhook"] == "webhook:8080"


def test_the_dashboard_is_well_formed_and_queries_only_defined_metrics() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "idsync.json").read_text())
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    defined = defined_series() | BUILTIN_SERIES
    panels = dashboard["panels"]
    assert dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    queried = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = series_in(target["expr"])
            assert names and not names - defined, f"{panel['title']}: {names - defined}"
            queried |= names
    # the figures the issue names are all on the dashboard
    for wanted in ("idsync_queue_depth", "idsync_queue_oldest_message_age_seconds", "idsync_events_processed_total",
                   "idsync_revocation_latency_seconds_bucket", "idsync_task_duration_seconds_bucket",
                   "idsync_task_retries_total", "idsync_tasks_parked_total", "idsync_dlq_entries",
                   "idsync_review_items", "idsync_graph_throttled_responses_total",
                   "idsync_salesforce_api_usage_ratio", "idsync_limiter_wait_seconds_sum",
                   "idsync_audit_sink_backlog_entries", "idsync_mapping_reload_failures_total"):
        assert wanted in queried, wanted


def test_grafana_provisioning_loads_the_dashboard_directory_compose_mounts() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "idsync.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose


def test_promtool_accepts_the_rules_and_the_config_where_it_is_installed(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # the structural checks above still ran; promtool comes with Debian's `prometheus` package
    result = subprocess.run([promtool, "check", "rules", str(PROM / "alerts.yml")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    local = tmp_path / "prometheus.yml"
    local.write_text((PROM / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml"))
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
