"""One Redis client (and so one connection pool) per URL per process.

Why cached: the limiter is consulted before every API call; a fresh client per call would open a socket each time.
Why reset after fork: Celery's prefork children inherit the parent's cache; a child must build its own client
rather than share the parent's sockets (redis-py's pool also guards by pid, this keeps our cache honest too).
"""

from __future__ import annotations

import os
import threading

import redis

SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def get_redis(url: str) -> redis.Redis:
    """The process-wide client for `url`, with string replies and bounded socket waits."""
    client = _clients.get(url)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                health_check_interval=HEALTH_CHECK_INTERVAL_S,
            )
            _clients[url] = client
        return client


def _forget_after_fork() -> None:
    global _lock
    # The parent's lock may have been held at fork time; a new one cannot be.
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
