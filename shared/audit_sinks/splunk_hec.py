"""The SIEM sink over HTTP: Splunk's HTTP Event Collector JSON format (also accepted by Cribl, Vector, Elastic's
Splunk-compatible inputs and others).

One POST per batch to `<url>/services/collector/event` with `Authorization: Splunk <token>`; the body is the batch's
event objects one after another (`{"time", "host", "source", "sourcetype", ["index"], "event": <chain entry>}`), as
HEC's batch form expects. Success is HTTP 200 with `{"code": 0}`; anything else fails the batch, which the writer
retries whole. Format: https://docs.splunk.com/Documentation/Splunk/latest/Data/FormateventsforHTTPEventCollector
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

import httpx

TIMEOUT_S = 10.0
SOURCETYPE = "idsync:audit"


class SplunkHecSink:
    name = "splunk_hec"

    def __init__(self, url: str, token: str, *, index: str | None = None, ca_bundle: Any = None,
                 host: str | None = None) -> None:
        self.endpoint = url.rstrip("/") + "/services/collector/event"
        self.index = index
        self.host = host or socket.gethostname()
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        # trust_env=False: proxy and CA variables must not redirect audit data or weaken verification.
        self._http = httpx.Client(verify=context, trust_env=False, timeout=TIMEOUT_S,
                                  headers={"Authorization": f"Splunk {token}"})

    @classmethod
    def from_settings(cls, settings: Any) -> SplunkHecSink:
        return cls(str(settings.audit_splunk_hec_url), settings.audit_splunk_hec_token.get_secret_value(),
                   index=settings.audit_splunk_hec_index, ca_bundle=settings.ca_bundle)

    def _event(self, entry: dict[str, Any]) -> dict[str, Any]:
        event = entry.get("event") or {}
        body: dict[str, Any] = {
            "time": round(float(event.get("time") or entry.get("chained_at") or 0.0), 6),
            "host": self.host,
            "source": "idsync",
            "sourcetype": SOURCETYPE,
            "event": entry,
        }
        if self.index:
            body["index"] = self.index
        return body

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        body = "\n".join(json.dumps(self._event(e), separators=(",", ":"), ensure_ascii=False) for e in entries)
        response = self._http.post(self.endpoint, content=body.encode("utf-8"),
                                   headers={"Content-Type": "application/json"})
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or answer.get("code", 0) != 0:
            text = answer.get("text") if isinstance(answer, dict) else None
            raise RuntimeError(f"HEC answered {response.status_code}: {text or response.reason_phrase}")

    def close(self) -> None:
        """The HTTP client is kept: httpx reconnects by itself after a failure."""
