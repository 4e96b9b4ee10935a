"""In-test SIEM receivers on loopback: an RFC 5424 syslog server over TLS (octet-counted frames) and a Splunk HEC
endpoint over HTTPS. Both keep what they received, parsed, for the tests to compare with the trail."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

_SYSLOG = re.compile(rb"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?[^\\]\]) \xef\xbb\xbf(.*)$", re.DOTALL)


class SyslogTlsReceiver:
    """Accepts TLS connections and splits the stream into `LEN SP MSG` frames (RFC 6587 octet counting)."""

    def __init__(self, ca: trustme.CA) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self.context)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            return
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    self._record(rest[: int(length)])
                    buffer = rest[int(length):]

    def _record(self, message: bytes) -> None:
        match = _SYSLOG.match(message)
        if match is None:
            raise AssertionError(f"not an RFC 5424 message: {message[:200]!r}")
        pri, ts, host, app, procid, msgid, sd, body = match.groups()
        with self._lock:
            self.messages.append({"pri": int(pri), "timestamp": ts.decode(), "app": app.decode(),
                                  "msgid": msgid.decode(), "sd": sd.decode(), "entry": json.loads(body)})

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m["entry"] for m in self.messages]

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()


class HecReceiver:
    """A minimal Splunk HTTP Event Collector: checks the token, splits concatenated JSON events, answers code 0."""

    def __init__(self, ca: trustme.CA, token: str) -> None:
        received: list[dict[str, Any]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                if self.path != "/services/collector/event" or self.headers.get("Authorization") != f"Splunk {token}":
                    self._answer(401, {"text": "Invalid token", "code": 4})
                    return
                decoder, pos, events = json.JSONDecoder(), 0, []
                while pos < len(body):
                    while pos < len(body) and body[pos].isspace():
                        pos += 1
                    if pos >= len(body):
                        break
                    obj, pos = decoder.raw_decode(body, pos)
                    events.append(obj)
                with lock:
                    received.extend(events)
                self._answer(200, {"text": "Success", "code": 0})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.events = received
        self._lock = lock
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e["event"] for e in self.events]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
