"""Credentials and the CA survive a restart on the same state dir, so clients configured once keep working."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from sandbox.server import SandboxServer, load_or_create_credentials


def test_a_restarted_sandbox_keeps_its_tenant_client_ids_secrets_and_ca(tmp_path: Path) -> None:
    first = SandboxServer(tmp_path)
    second = SandboxServer(tmp_path)
    for field in ("tenant_id", "graph_client_id", "graph_client_secret", "sf_client_id", "sf_client_secret",
                  "admin_token"):
        assert getattr(first.state.creds, field) == getattr(second.state.creds, field)
    assert first.tls.ca_path.read_bytes() == second.tls.ca_path.read_bytes()


def test_a_new_state_dir_gets_new_credentials(tmp_path: Path) -> None:
    a = load_or_create_credentials(tmp_path / "a")
    b = load_or_create_credentials(tmp_path / "b")
    assert a.tenant_id != b.tenant_id and a.graph_client_secret != b.graph_client_secret


def test_the_credentials_file_is_private_and_holds_no_app_roles(tmp_path: Path) -> None:
    load_or_create_credentials(tmp_path)
    path = tmp_path / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert "graph_roles" not in data
    assert data["admin_token"]


def test_a_wildcard_bind_is_advertised_as_loopback(tmp_path: Path) -> None:
    server = SandboxServer(tmp_path, host="0.0.0.0")
    assert server.public_host == "127.0.0.1"
