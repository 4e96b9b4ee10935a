"""Port choice for `idsync run`: use the configured port when it is free, else a free one, and say so."""

from __future__ import annotations

import socket

from ops.embedded_redis import free_port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int, host: str = "127.0.0.1") -> tuple[int, bool]:
    """Returns (port, replaced). Port 0 means "any free port" and is not reported as a replacement."""
    if preferred and port_is_free(preferred, host):
        return preferred, False
    return free_port(host), bool(preferred)
