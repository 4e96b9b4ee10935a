"""Beat's heartbeat (what `idsync health beat`, the compose healthcheck, reads) survives a Redis outage."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis.exceptions

from ops.cli.service import BEAT_HEARTBEAT_KEY, beat_heartbeat


class FlakyRedis:
    """Refuses every call while `down`, like a client whose Redis restarts; records the heartbeats written."""

    def __init__(self) -> None:
        self.down = True
        self.refused = 0
        self.beats: list[tuple[str, str, Any]] = []

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    def exists(self, key: str) -> int:
        self._check()
        return 0

    def set(self, key: str, value: str, ex: Any = None) -> bool:
        self._check()
        self.beats.append((key, value, ex))
        return True


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_the_heartbeat_resumes_when_redis_comes_back_after_an_outage() -> None:
    client, stop = FlakyRedis(), threading.Event()
    thread = threading.Thread(target=beat_heartbeat, args=(client, stop), kwargs={"interval_s": 0.05, "retry_s": 0.01},
                              daemon=True)
    thread.start()
    try:
        assert _wait(lambda: client.refused >= 3), "the heartbeat thread stopped trying during the outage"
        assert thread.is_alive() and client.beats == []
        client.down = False
        assert _wait(lambda: len(client.beats) >= 2), "no heartbeat after Redis came back"
        key, value, ttl = client.beats[-1]
        assert key == BEAT_HEARTBEAT_KEY and float(value) > time.time() - 60 and ttl == 120
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_the_heartbeat_is_written_at_once_and_stops_when_asked() -> None:
    client, stop = FlakyRedis(), threading.Event()
    client.down = False
    thread = threading.Thread(target=beat_heartbeat, args=(client, stop), kwargs={"interval_s": 30.0}, daemon=True)
    thread.start()
    assert _wait(lambda: client.beats), "no heartbeat at start-up"
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and len(client.beats) == 1
