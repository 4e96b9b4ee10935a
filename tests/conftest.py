"""Fixtures shared by the whole suite.

Integration fixtures start real parts: a private redis-server on a free port, the sandbox over HTTPS.
The machine's CA variables are removed here (docs/decisions.md#ca-bundle): the product must pass its CA explicitly.
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


# ------------------------------------------------------------------------------------------------ PostgreSQL
class ThrowawayPostgres:
    """A private PostgreSQL cluster (initdb + pg_ctl) on a free port, which a test may stop and start.

    Run as the `postgres` user when the tests run as root (initdb refuses root). Never skipped in CI: without the
    server binaries the fixture fails there.
    """

    def __init__(self) -> None:
        import getpass
        import glob
        import shutil
        import tempfile

        from ops.embedded_redis import free_port

        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_pg_version)
        initdb = shutil.which("initdb") or (candidates[-1] if candidates else None)
        if initdb is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
            pytest.skip("no PostgreSQL server binaries (set IDSYNC_TEST_POSTGRES_URL or install postgresql)")
        self.bin = Path(initdb).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="idsync-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if getpass.getuser() == "root":
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        result = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr[-2000:]}")

    def start(self) -> ThrowawayPostgres:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        import shutil

        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_version(path: str) -> float:
    try:
        return float(Path(path).parent.parent.name)
    except ValueError:
        return 0.0


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A dedicated empty database: on IDSYNC_TEST_POSTGRES_URL's server when set (CI), else on a throwaway one."""
    import uuid

    base = os.environ.get("IDSYNC_TEST_POSTGRES_URL")
    if not base:
        server = ThrowawayPostgres().start()
        try:
            yield server.url
        finally:
            server.destroy()
        return
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"idsync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(base)
    params["dbname"] = name
    try:
        yield make_conninfo("", **params)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
