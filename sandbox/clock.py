"""The sandbox's clock: real time plus an offset an operator can advance.

Token expiry (7-day delta tokens, Salesforce sessions, subscription expiry) is judged on this clock, so tests can
jump days ahead without sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        """Seconds since the epoch on the sandbox clock."""
        return time.time() + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._offset += float(seconds)
            return self._offset

    def reset(self) -> None:
        """Back to real time: the one way the clock moves backwards (`POST /_sandbox/reset`, between test runs)."""
        with self._lock:
            self._offset = 0.0

    @property
    def offset(self) -> float:
        return self._offset

    def iso(self) -> str:
        """Graph-style timestamp, e.g. 2026-11-26T08:42:59.123Z."""
        return self.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
