"""The one way idsync builds a `requests` session (MSAL's token calls, simple-salesforce's REST calls).

Why `trust_env = False`: with it on, requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (which many machines export)
replace the session's `verify` at send time, so a configured CA bundle would silently be ignored, and proxy variables
could reroute calls carrying tokens (docs/decisions.md#ca-bundle). Why a timeout adapter: requests has no default
timeout, and simple-salesforce passes none for create/update, so one hung connection would hold a worker for ever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

CONNECT_TIMEOUT_S = 5.0


class TimeoutHTTPAdapter(HTTPAdapter):
    """Gives every request a timeout unless the caller chose one."""

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout), timeout)
        super().__init__(**kwargs)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        return super().send(request, stream, self.timeout if timeout is None else timeout, verify, cert, proxies)


def pinned_session(ca_bundle: str | Path | None, timeout_s: float | None = None) -> requests.Session:
    """A session that verifies against `ca_bundle` (else the system store) whatever the environment says, and
    gives every request `timeout_s` (read; connect at most 5 s) unless the caller passes its own."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_bundle) if ca_bundle else True
    if timeout_s is not None:
        adapter = TimeoutHTTPAdapter(float(timeout_s))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session
