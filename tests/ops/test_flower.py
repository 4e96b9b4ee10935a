"""Flower runs behind basic auth; only its health endpoint answers without credentials."""

import os
import signal
import subprocess
import sys
import time

import httpx

from ops.embedded_redis import free_port


def test_flower_requires_basic_auth(redis_server, tmp_path):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "IDSYNC_REDIS_URL": redis_server.url, "IDSYNC_FLOWER_PASSWORD": "pw-test"}
    proc = subprocess.Popen([sys.executable, "-m", "ops", "flower", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "flower did not start"
            time.sleep(0.2)
        assert httpx.get(f"{base}/", timeout=5).status_code == 401
        assert httpx.get(f"{base}/", auth=("admin", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{base}/", auth=("admin", "pw-test"), timeout=5, follow_redirects=True).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
