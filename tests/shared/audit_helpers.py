"""Helpers for the audit tests: an in-memory sink that can be "down", event emitters, a drain loop."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.audit import audit
from shared.audit_writer import AuditWriter

KEY = b"writer-test-key"


class MemorySink:
    """Records what it receives; `down` makes every delivery fail, like a sink that is unreachable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[dict[str, Any]] = []
        self.down = False
        self.attempts = 0

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionError(f"{self.name} is down")
        self.entries.extend(entries)

    def close(self) -> None:
        pass


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def emit(redis_client: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        audit(redis_client, "revoke", f"entra-{i}", f"005{i:05d}", "revoked", f"corr-{i}", upn=f"u{i}@example.com",
              observed_at=time.time() - 0.05)


def drain(writer: AuditWriter) -> None:
    while writer.step():
        pass
    for name in writer.sinks:
        while writer.deliver_once(name):
            pass


