"""The SIEM sink over syslog: RFC 5424 messages over TCP or TLS, octet-counted framing (RFC 6587 section 3.4.1).

Why octet counting: the message body is JSON and may contain newlines; `LEN SP MSG` frames it exactly, which every
mainstream receiver (rsyslog imtcp/imptcp, syslog-ng, Splunk, Sentinel's AMA) accepts.

Each chain entry is one message: PRI = facility * 8 + severity (notice for events, info for checkpoints), the
event's own time, APP-NAME "idsync", MSGID "audit" or "checkpoint", structured data
`[idsync@32473 seq=".." hash=".." action=".." outcome=".."]` (32473 is the enterprise number RFC 5612 reserves for
examples; receivers only need it to be stable), then a UTF-8 BOM and the entry's canonical JSON.

Syslog has no acknowledgement: a batch counts as delivered once the kernel accepted it. A connection found closed
before a batch is reopened; a send that fails is retried whole, so a receiver may see an entry twice after a network
failure (the `seq` parameter identifies it).
"""

from __future__ import annotations

import os
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.audit_events import canonical_json

SEVERITY_NOTICE = 5
SEVERITY_INFO = 6
SD_ID = "idsync@32473"
TIMEOUT_S = 10.0
BOM = "\ufeff".encode()


def _sd_value(value: Any) -> str:
    """RFC 5424 section 6.3.3: '"', '\\' and ']' are escaped with a backslash."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_message(entry: dict[str, Any], facility: int, hostname: str, procid: str) -> bytes:
    event = entry.get("event") or {}
    checkpoint = entry.get("type") == "checkpoint"
    severity = SEVERITY_INFO if checkpoint else SEVERITY_NOTICE
    ts = float(event.get("time") or entry.get("chained_at") or 0.0)
    params = {"seq": entry["seq"], "hash": entry["hash"]}
    if not checkpoint:
        params.update(action=event.get("action", ""), outcome=event.get("outcome", ""))
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    header = (f"<{facility * 8 + severity}>1 {_timestamp(ts)} {hostname} idsync {procid} "
              f"{'checkpoint' if checkpoint else 'audit'} {sd} ")
    return header.encode("ascii", "replace") + BOM + canonical_json(entry).encode("utf-8")


def frame(message: bytes) -> bytes:
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSink:
    name = "syslog"

    def __init__(self, host: str, port: int, *, tls: bool, ca_bundle: Path | None = None, facility: int = 13,
                 hostname: str | None = None) -> None:
        self.host, self.port, self.tls, self.ca_bundle, self.facility = host, port, tls, ca_bundle, facility
        # RFC 5424 HOSTNAME: printable US-ASCII, at most 255 characters, "-" when unknown.
        self.hostname = "".join(c for c in (hostname or socket.gethostname()) if 33 <= ord(c) <= 126)[:255] or "-"
        self.procid = str(os.getpid())
        self._sock: socket.socket | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> SyslogSink:
        url = urlsplit(str(settings.audit_syslog_url))
        if url.scheme not in ("tcp", "tls") or not url.hostname:
            raise ValueError("IDSYNC_AUDIT_SYSLOG_URL must be tcp://host:port or tls://host:port")
        port = url.port or (6514 if url.scheme == "tls" else 514)
        return cls(url.hostname, port, tls=url.scheme == "tls", ca_bundle=settings.ca_bundle,
                   facility=settings.audit_syslog_facility)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT_S)
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            sock = context.wrap_socket(sock, server_hostname=self.host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _usable(self) -> socket.socket:
        """The open connection, or a new one if the receiver closed it since the last batch."""
        if self._sock is not None and _peer_closed(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        return self._sock

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        data = b"".join(frame(format_message(e, self.facility, self.hostname, self.procid)) for e in entries)
        sock = self._usable()
        try:
            sock.sendall(data)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


def _peer_closed(sock: socket.socket) -> bool:
    """A receiver never sends on a syslog connection, so readable-with-no-data means it hung up."""
    try:
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        finally:
            sock.setblocking(True)
            sock.settimeout(TIMEOUT_S)
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
    return data == b""
