"""Done-when of issue 6 #4: a restart of `make run` in which the sandbox moves to another port has the poller healthy
within one round. The sandbox keeps its state directory (credentials, CA) across the restart, like `make run` does;
only the port changes, so the stored deltaLinks point at an address the Graph client refuses to call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops import components
from ops.embedded_redis import EmbeddedRedis, free_port
from producers.checkpoints import DeltaCheckpoints
from sandbox.server import SandboxServer
from shared.errors import TransportError
from shared.settings import Settings, load_settings

pytestmark = pytest.mark.integration

SEED: dict[str, Any] = {"users": 20, "groups": 3, "seed": 11, "overlap": 1.0}


def _settings(sandbox: SandboxServer, redis_server: EmbeddedRedis) -> Settings:
    values: dict[str, Any] = {k.removeprefix("IDSYNC_").lower(): v for k, v in sandbox.env().items()}
    return load_settings(_env_file=None, **values, redis_url=redis_server.url, log_json=True)


def _health(sandbox: SandboxServer, redis_server: EmbeddedRedis, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **sandbox.env(), "IDSYNC_REDIS_URL": redis_server.url}
    return subprocess.run([sys.executable, "-m", "ops", "health", "poller"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_after_the_sandbox_moved_to_another_port_one_round_resyncs_and_the_poller_is_healthy(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    state_dir = tmp_path / "sandbox"
    first = SandboxServer(state_dir, port=free_port(), **SEED).start()
    try:
        settings = _settings(first, redis_server)
        poller = components.delta_poller(settings)
        assert [r.resource for r in poller.run_once()] == ["users", "groups"]
        poller.sender.close()
        tenant = settings.graph_tenant_id
        assert tenant
        checkpoints = DeltaCheckpoints(components.redis_client(settings), tenant)
        old_link = checkpoints.get("users")
        assert old_link and old_link.startswith(first.base_url)
        assert _health(first, redis_server, tmp_path).returncode == 0
    finally:
        first.stop()

    second_port = free_port()
    while second_port == first.port:
        second_port = free_port()
    second = SandboxServer(state_dir, port=second_port, **SEED).start()  # `make run` again: same state, new port
    try:
        settings = _settings(second, redis_server)
        assert settings.graph_url != _settings(first, redis_server).graph_url
        poller = components.delta_poller(settings)

        results = poller.run_once()  # ONE round per resource

        assert [r.resynced for r in results] == [True, True]
        assert all(r.events > 0 for r in results)  # a full enumeration, not "from now"
        for resource in ("users", "groups"):
            assert (checkpoints.get(resource) or "").startswith(second.base_url)
            assert checkpoints.resync_pending(resource) is None
            assert checkpoints.outcome(resource)["consecutive_failures"] == 0
        health = _health(second, redis_server, tmp_path)
        assert (health.returncode, health.stdout.strip()) == (0, "healthy")
        poller.sender.close()
    finally:
        second.stop()


def test_rounds_that_keep_failing_make_the_poller_unhealthy_and_status_says_why(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """Before the fix the health check read only the previous run's last round and said healthy for minutes."""
    sandbox = SandboxServer(tmp_path / "sandbox", **SEED).start()
    try:
        settings = _settings(sandbox, redis_server)
        poller = components.delta_poller(settings)
        poller.run_once()
        poller.sender.close()
        assert _health(sandbox, redis_server, tmp_path).returncode == 0
        # Graph becomes unreachable (a network cut): every round fails with a transport error.
        broken = settings.model_copy(update={"graph_url": f"https://127.0.0.1:{free_port()}/v1.0"})
        failing = components.delta_poller(broken)
        for _ in range(3):
            with pytest.raises(TransportError):
                failing.run_round("users")
        failing.sender.close()
        health = _health(sandbox, redis_server, tmp_path)
        assert health.returncode == 1
        assert "the last 3 rounds failed, last with TransportError" in health.stdout
    finally:
        sandbox.stop()
