"""A private CA kept on disk, so clients configured once (IDSYNC_CA_BUNDLE) keep trusting restarted sandboxes."""

from __future__ import annotations

from pathlib import Path

import trustme


class SandboxTLS:
    def __init__(self, state_dir: Path, hostnames: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")) -> None:
        self.dir = Path(state_dir) / "tls"
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = self.dir / "ca.pem", self.dir / "ca-key.pem"
        if ca_cert.exists() and ca_key.exists():
            self.ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
        else:
            self.ca = trustme.CA(organization_name="idsync sandbox")
            self.ca.cert_pem.write_to_path(str(ca_cert))
            self.ca.private_key_pem.write_to_path(str(ca_key))
            ca_key.chmod(0o600)
        self.ca_path = ca_cert
        leaf = self.ca.issue_cert(*hostnames)
        self.cert_path = self.dir / "server.pem"
        self.key_path = self.dir / "server-key.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(self.cert_path))
        leaf.private_key_pem.write_to_path(str(self.key_path))
        self.key_path.chmod(0o600)
