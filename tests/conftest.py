"""Fixtures shared by the whole suite.

Integration fixtures start real parts: a private redis-server on a free port, the sandbox over HTTPS.
The machine's CA variables are removed here (the CA-bundle trap): the product must pass its CA explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops.embedded_redis import EmbeddedRedis

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
