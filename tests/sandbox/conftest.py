"""A real sandbox over HTTPS for the sandbox's own tests (module-scoped: seeding costs a little)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=60, groups=8, seed=7).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ssl_ctx(sandbox: SandboxServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox.state.ca_path))


@pytest.fixture
def http(sandbox: SandboxServer, ssl_ctx: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, verify=ssl_ctx, trust_env=False, timeout=20) as client:
        yield client
