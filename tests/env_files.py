"""What the CLI tests write where `idsync` looks for settings: a sandbox's `var/sandbox.env` (values of the shape
`python -m sandbox` writes; nothing listens on them unless a test starts something) and `.env` files."""

from __future__ import annotations

from pathlib import Path

SANDBOX = {
    "IDSYNC_GRAPH_AUTHORITY": "https://127.0.0.1:8443/t1",
    "IDSYNC_GRAPH_URL": "https://127.0.0.1:8443/v1.0",
    "IDSYNC_GRAPH_TENANT_ID": "t1",
    "IDSYNC_GRAPH_CLIENT_ID": "sandbox-app",
    "IDSYNC_GRAPH_CLIENT_SECRET": "sandbox-graph-secret",
    "IDSYNC_SF_URL": "https://127.0.0.1:8443",
    "IDSYNC_SF_CLIENT_ID": "sandbox-sf-app",
    "IDSYNC_SF_CLIENT_SECRET": "sandbox-sf-secret",
    "IDSYNC_SANDBOX_ADMIN_URL": "https://127.0.0.1:8443",
    "IDSYNC_SANDBOX_ADMIN_TOKEN": "sandbox-admin-token",
}


def write_env(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
