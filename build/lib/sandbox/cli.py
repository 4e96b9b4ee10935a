"""`python -m sandbox`: run the whole sandbox in the foreground and hand its settings over in a dotenv file.

The env file is written only once the server answers real HTTPS requests, so anything that waits for the file
(a test, a demo script, `make run`) can connect as soon as it appears. Ctrl-C and SIGTERM stop the server and the
webhook notifier and exit 0, so supervisors and test harnesses see a clean stop rather than a crash.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from sandbox.admin import parse_assignment, validate_patch
from sandbox.config import DEFAULT_CONFIG, DEFAULT_FAULTS, merge_patch
from sandbox.envfile import write_env_file
from sandbox.server import SandboxServer

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopRequested(Exception):
    """Raised from the signal handler while the sandbox is still seeding, to abandon the start-up."""


def _assignments(values: Sequence[str], defaults: dict[str, dict[str, Any]], flag: str) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for text in values:
        try:
            merge_patch(patch, validate_patch(defaults, parse_assignment(text, defaults)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag} {text}: {exc}") from exc
    return patch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Run a local Microsoft Graph + identity platform + Salesforce org over HTTPS for idsync.",
        epilog="Example: python -m sandbox --users 500 --set graph.delta_page_size=100 "
        "--fault salesforce.error_rate=0.1",
    )
    p.add_argument("--users", type=int, default=50, help="Entra users to seed (default 50)")
    p.add_argument("--groups", type=int, default=8, help="Entra groups to seed (default 8)")
    p.add_argument("--seed", type=int, default=1, help="random seed, so the same flags give the same data")
    p.add_argument("--overlap", type=float, default=0.3, help="share of Entra users that already exist in Salesforce")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port to bind; 0 picks a free one (default 8443)")
    p.add_argument("--state-dir", type=Path, default=Path("var/sandbox"), help="CA and credentials (var/sandbox)")
    p.add_argument("--env-file", type=Path, default=Path("var/sandbox.env"), help="dotenv output (var/sandbox.env)")
    p.add_argument("--set", dest="config", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change a setting, e.g. graph.ru_per_10s=100 (value parsed as JSON when it can be)")
    p.add_argument("--fault", dest="faults", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="inject a fault, e.g. salesforce.error_rate=0.1 or salesforce.error_kinds=503,timeout")
    return p


def _wait_until_answering(server: SandboxServer, timeout: float = 15.0) -> None:
    """Prove the server answers over real HTTPS (TLS with the on-disk CA, identity and control routes)."""
    ctx = ssl.create_default_context(cafile=str(server.state.ca_path))
    probes = [
        f"/{server.state.creds.tenant_id}/v2.0/.well-known/openid-configuration",
        "/_sandbox/health",
    ]
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, verify=ctx, trust_env=False, timeout=5) as client:
        for path in probes:
            while True:
                try:
                    if client.get(path).status_code == 200:
                        break
                    error = "not 200"
                except httpx.HTTPError as exc:
                    error = repr(exc)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sandbox did not answer {path}: {error}")
                time.sleep(0.05)


def _count(obj: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            try:
                return len(value)
            except TypeError:
                return None
    return None


def _banner(server: SandboxServer, env_file: Path, out: TextIO) -> None:
    env = server.env()
    entra = _count(server.state.directory, "users")
    org = server.state.org
    sf = len(org.records("User")) if hasattr(org, "records") else _count(org, "users")
    rows = [
        ("Graph authority", env["IDSYNC_GRAPH_AUTHORITY"]),
        ("Graph API", env["IDSYNC_GRAPH_URL"]),
        ("Salesforce", env["IDSYNC_SF_URL"]),
        ("Status page", f"{env['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/?token=<IDSYNC_SANDBOX_ADMIN_TOKEN>"),
        ("Control API", f"{env['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/"),
        ("CA bundle", env["IDSYNC_CA_BUNDLE"]),
        ("env file", str(env_file)),
        ("seeded", f"{'?' if entra is None else entra} Entra users, {'?' if sf is None else sf} Salesforce users"),
    ]
    print("idsync sandbox ready (secrets are in the env file)", file=out)
    for label, value in rows:
        print(f"  {label:<16} {value}", file=out)
    print("Press Ctrl-C to stop.", file=out, flush=True)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config_patch = _assignments(args.config, DEFAULT_CONFIG, "--set")
        fault_patch = _assignments(args.faults, DEFAULT_FAULTS, "--fault")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.users < 0 or args.groups < 0 or not 0.0 <= args.overlap <= 1.0:
        parser.error("--users/--groups must be >= 0 and --overlap between 0 and 1")

    stop = threading.Event()
    serving = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not serving:
            raise _StopRequested()

    previous = {sig: signal.signal(sig, on_signal) for sig in _SIGNALS}
    server: SandboxServer | None = None
    try:
        env_file = args.env_file.absolute()
        env_file.unlink(missing_ok=True)  # a stale file would point waiters at a dead port
        server = SandboxServer(
            args.state_dir, host=args.host, port=args.port,
            users=args.users, groups=args.groups, seed=args.seed, overlap=args.overlap,
        )
        server.state.config.patch(config_patch)
        server.state.faults.patch(fault_patch)
        server.start()
        _wait_until_answering(server)
        write_env_file(env_file, server.env())
        serving = True
        _banner(server, env_file, out)
        while not stop.wait(0.5):
            pass
        print("stopping sandbox", file=out, flush=True)
        return 0
    except _StopRequested:
        print("interrupted during start-up; stopping", file=out, flush=True)
        return 0
    except (OSError, RuntimeError) as exc:
        print(f"sandbox could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        serving = True  # a second Ctrl-C during shutdown must not raise inside stop()
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
