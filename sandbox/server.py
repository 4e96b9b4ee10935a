"""Assemble the sandbox app and run it over HTTPS on one port, in-process (tests) or as `python -m sandbox`.

One port serves the identity platform, Microsoft Graph, the Salesforce org (its "My Domain") and the control API:
paths keep them apart exactly as the real hosts' paths do, so clients need only the base URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypedDict

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from sandbox.state import Credentials, SandboxState
from sandbox.tls import SandboxTLS

#: credential fields kept across restarts; app roles are left out so a changed default reaches old state dirs
_PERSISTED_CREDENTIALS = (
    "tenant_id",
    "graph_client_id",
    "graph_client_secret",
    "sf_client_id",
    "sf_client_secret",
    "admin_token",
)
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def load_or_create_credentials(state_dir: Path) -> Credentials:
    """Reuse `state_dir/credentials.json` so clients configured once keep working after a restart.

    A fresh state dir gets new random credentials, written 0600 (tmp file + rename, so a crash never leaves a
    half-written file that would lock clients out). Delete the file to rotate everything.
    """
    path = Path(state_dir) / "credentials.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        persisted: dict[str, Any] = {k: str(data[k]) for k in _PERSISTED_CREDENTIALS if data.get(k)}
        return Credentials(**persisted)
    creds = Credentials()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in dataclasses.asdict(creds).items() if k in _PERSISTED_CREDENTIALS}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials.", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return creds


def build_app(state: SandboxState) -> Starlette:
    from sandbox import admin, graph, salesforce

    routes: list[BaseRoute] = []
    routes += admin.install(state)
    routes += salesforce.install(state)
    routes += graph.install(state)  # last: it owns the catch-all /{tenant}/... identity routes
    return Starlette(routes=routes)


class SeedArgs(TypedDict):
    users: int
    groups: int
    seed: int
    overlap: float


def seed(state: SandboxState, *, users: int, groups: int, seed: int, overlap: float) -> None:
    from sandbox.graph.seed import seed_directory
    from sandbox.salesforce.seed import seed_org

    seed_directory(state, users=users, groups=groups, seed=seed)
    with state.lock:
        tenant_users = [dict(u) for u in state.directory.users.values()]
    seed_org(state, tenant_users=tenant_users, seed=seed, overlap=overlap)


class SandboxServer:
    """The whole sandbox on one HTTPS port, in a background thread."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: int = 50,
        groups: int = 8,
        seed: int = 1,
        overlap: float = 0.3,
    ) -> None:
        self.host, self.port = host, port
        self.seed_args = SeedArgs(users=users, groups=groups, seed=seed, overlap=overlap)
        self.state = SandboxState(state_dir=Path(state_dir), creds=load_or_create_credentials(Path(state_dir)))
        #: the address clients use: a wildcard bind is advertised as loopback, which the certificate covers
        self.public_host = _WILDCARD_HOSTS.get(host, host)
        hostnames: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
        if self.public_host not in hostnames:
            hostnames += (self.public_host,)
        self.tls = SandboxTLS(self.state.state_dir, hostnames=hostnames)
        self.state.ca_path = self.tls.ca_path
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.seed_seconds: float | None = None

    def start(self, timeout: float = 30.0) -> SandboxServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listener says TCP;
        # without it every response written as headers-then-body stalls ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        self._sock = sock
        self.port = sock.getsockname()[1]
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        self.state.base_url = f"https://{host}:{self.port}"
        app = build_app(self.state)
        started = time.perf_counter()
        seed(self.state, **self.seed_args)
        #: how long seeding took (bench/sandbox_scale.py reports it)
        self.seed_seconds = time.perf_counter() - started
        config = uvicorn.Config(
            app,
            ssl_certfile=str(self.tls.cert_path),
            ssl_keyfile=str(self.tls.key_path),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        # Served from a thread: uvicorn installs signal handlers only in the main thread, so ours stay in place.
        self._server = uvicorn.Server(config)
        # What `POST /_sandbox/reset` returns to: the defaults plus whatever was set before the start.
        self.state.config.mark_baseline()
        self.state.faults.mark_baseline()
        self._thread = threading.Thread(target=self._serve, name="sandbox-https", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sandbox server failed to start")
            time.sleep(0.01)
        if self.state.notifier is not None:
            self.state.notifier.start()
        return self

    def _serve(self) -> None:
        assert self._server and self._sock
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self) -> None:
        if self.state.notifier is not None:
            self.state.notifier.stop()
        if self._server:
            self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
        if self._sock:
            self._sock.close()

    @property
    def base_url(self) -> str:
        return self.state.base_url

    def env(self) -> dict[str, str]:
        """The settings a client needs, under the product's own setting names."""
        c = self.state.creds
        base = self.state.base_url
        return {
            "IDSYNC_GRAPH_AUTHORITY": f"{base}/{c.tenant_id}",
            "IDSYNC_GRAPH_URL": f"{base}/v1.0",
            "IDSYNC_GRAPH_TENANT_ID": c.tenant_id,
            "IDSYNC_GRAPH_CLIENT_ID": c.graph_client_id,
            "IDSYNC_GRAPH_CLIENT_SECRET": c.graph_client_secret,
            "IDSYNC_SF_URL": base,
            "IDSYNC_SF_CLIENT_ID": c.sf_client_id,
            "IDSYNC_SF_CLIENT_SECRET": c.sf_client_secret,
            "IDSYNC_CA_BUNDLE": str(self.tls.ca_path.resolve()),
            "IDSYNC_SANDBOX_ADMIN_URL": base,
            "IDSYNC_SANDBOX_ADMIN_TOKEN": c.admin_token,
        }

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
