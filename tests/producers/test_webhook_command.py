"""`idsync webhook` wiring that only the command does: the metrics listener on its own port."""

from __future__ import annotations

import socket
import subprocess
import sys

from ops.embedded_redis import free_port
from tests.producers.fakes import TENANT


def test_a_taken_metrics_port_stops_the_webhook_with_one_line_naming_the_setting(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "IDSYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # never contacted before the listener starts
            "IDSYNC_GRAPH_AUTHORITY": f"https://login.test/{TENANT}",
            "IDSYNC_GRAPH_TENANT_ID": TENANT,
            "IDSYNC_GRAPH_CLIENT_ID": "client",
            "IDSYNC_GRAPH_CLIENT_SECRET": "secret",
            "IDSYNC_SF_URL": "https://org.test",
            "IDSYNC_SF_CLIENT_ID": "sf-client",
            "IDSYNC_SF_CLIENT_SECRET": "sf-secret",
            "IDSYNC_WEBHOOK_PORT": str(free_port()),
            "IDSYNC_WEBHOOK_METRICS_PORT": str(port),
            # a real tenant must pass the deployment checks first: own clientState, an https public URL
            "IDSYNC_WEBHOOK_CLIENT_STATE": "a-long-random-client-state-for-this-test",
            "IDSYNC_WEBHOOK_PUBLIC_URL": "https://idsync.example.test",
            "IDSYNC_GRAPH_URL": "https://graph.test/v1.0",
        }
        result = subprocess.run([sys.executable, "-m", "ops", "webhook"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "IDSYNC_WEBHOOK_METRICS_PORT" in lines[0] and str(port) in lines[0]
