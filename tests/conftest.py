"""Fixtures shared by the whole suite.

Integration fixtures start real parts: a private redis-server on a free port, the sandbox over HTTPS.
The machine's CA variables are removed here (the CA-bundle trap): the product must pass its CA explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from ops.embedded_redis import EmbeddedRedis

if TYPE_CHECKING:
    from sandbox.server import SandboxServer

for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    # Kept out of the test process so nothing passes by accident through the environment. SSL_CERT_FILE stays
    # on purpose: the product must still verify against its own bundle when it is set.
    os.environ.pop(_var, None)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port with AOF on, stopped after the test."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def reset_sandbox(server: SandboxServer) -> dict[str, object]:
    """`POST /_sandbox/reset` over HTTPS, as any client of the control API would (see docs/sandbox.md)."""
    import ssl

    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=str(server.state.ca_path)), trust_env=False,
                      timeout=20) as client:
        response = client.post(f"{server.base_url}/_sandbox/reset",
                               headers={"Authorization": f"Bearer {server.state.creds.admin_token}"})
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


@pytest.fixture(autouse=True)
def fresh_sandbox(request: pytest.FixtureRequest) -> None:
    """Every test that uses the (module-shared) sandbox starts with its clock at real time, its start-up config and
    faults, and no subscriptions: what an earlier test advanced, broke or subscribed cannot leak into it."""
    if "sandbox" in request.fixturenames:
        reset_sandbox(request.getfixturevalue("sandbox"))
