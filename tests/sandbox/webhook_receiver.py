"""A configurable webhook endpoint for the sandbox's notification tests, run in a background thread.

Why a real server and not a mock: the sandbox's notifier makes real HTTP(S) calls with real timeouts, so the tests
need something that can answer a validation handshake right or wrong, be slow, fail with 5xx, and record exactly
what arrived on the wire.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme


@dataclass
class Received:
    """One POST that reached the receiver."""

    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_validation(self) -> bool:
        return "validationToken" in self.query


class WebhookReceiver:
    """HTTP (or HTTPS, given a trustme CA) endpoint whose behaviour tests change between steps.

    Attributes tests set:
    - ``validation_mode``: ``"echo"`` (correct: decoded token, text/plain), ``"encoded"`` (echo the still-encoded
      token), ``"json"`` (token as JSON), ``"status"`` (answer ``validation_status`` with no token).
    - ``validation_delay_s``: sleep before answering a handshake.
    - ``statuses``: status codes for the next notification POSTs, consumed in order; afterwards ``default_status``.
    - ``delay_s``: sleep before answering a notification POST.
    """

    def __init__(self, tls_ca: trustme.CA | None = None) -> None:
        self.validation_mode = "echo"
        self.validation_status = 500
        self.validation_delay_s = 0.0
        self.default_status = 202
        self.statuses: list[int] = []
        self.delay_s = 0.0
        #: when set, notification POSTs wait for this event (a stuck endpoint, released by the test)
        self.gate: threading.Event | None = None
        self.received: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                item = Received(
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    raw_query=parts.query,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with receiver._cond:
                    receiver.received.append(item)
                    receiver._cond.notify_all()
                if item.is_validation:
                    self._answer_validation(item)
                else:
                    self._answer_notification()

            def _answer_validation(self, item: Received) -> None:
                time.sleep(receiver.validation_delay_s)
                token = item.query["validationToken"][0]
                encoded = item.raw_query.split("validationToken=", 1)[1].split("&", 1)[0]
                mode = receiver.validation_mode
                if mode == "echo":
                    self._send(200, token.encode(), "text/plain")
                elif mode == "encoded":
                    self._send(200, encoded.encode(), "text/plain")
                elif mode == "json":
                    self._send(200, json.dumps({"validationToken": token}).encode(), "application/json")
                else:
                    self._send(receiver.validation_status, b"", "text/plain")

            def _answer_notification(self) -> None:
                time.sleep(receiver.delay_s)
                if receiver.gate is not None:
                    receiver.gate.wait(15)
                with receiver._cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                self._send(status, b"", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the notifier gave up (timeout); that is the behaviour under test

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        scheme = "http"
        if tls_ca is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.base_url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )

    def url(self, path: str = "/notify") -> str:
        return self.base_url + path

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- what arrived ---------------------------------------------------------------------------------------------

    def notification_posts(self, path: str | None = None) -> list[Received]:
        """Non-handshake POSTs (optionally to one path), in arrival order."""
        with self._cond:
            return [r for r in self.received if not r.is_validation and (path is None or r.path == path)]

    def notifications(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every `value[]` item delivered so far, flattened across POSTs."""
        return [item for post in self.notification_posts(path) for item in post.json["value"]]

    def holds_within(self, predicate: Callable[[WebhookReceiver], bool], timeout: float) -> bool:
        """Whether `predicate(self)` held at some moment within `timeout` (checked on each arrival and every 50 ms)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def wait_for(self, predicate: Callable[[WebhookReceiver], bool], what: str, timeout: float = 10.0) -> None:
        """Block until `predicate(self)` holds; fail the test naming `what` if it does not within `timeout`.

        Why it raises rather than returning False: a caller that forgets to check the result would let "it never
        arrived" pass as success.
        """
        if not self.holds_within(predicate, timeout):
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; received {self._summary()}")

    def assert_never(self, predicate: Callable[[WebhookReceiver], bool], what: str, period: float = 1.0) -> None:
        """Fail if `predicate(self)` holds at any moment during the next `period` seconds.

        "Nothing arrived" can only be observed over a bounded time: callers choose `period` well above the delay the
        unwanted delivery would have (e.g. several notification retry intervals).
        """
        if self.holds_within(predicate, period):
            raise AssertionError(f"{what} happened within {period} s; received {self._summary()}")

    def wait_notifications(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` notifications arrived; return them all (fails the test on timeout)."""
        self.wait_for(lambda r: len(r.notifications(path)) >= count, f"{count} notifications", timeout)
        return self.notifications(path)

    def _summary(self) -> str:
        posts = self.notification_posts()
        return f"{len(posts)} notification POSTs with {sum(len(p.json['value']) for p in posts)} items"
