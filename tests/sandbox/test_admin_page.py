"""The read-only status page at `/_sandbox/`, rendered from a state with hand-made stores (no server needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from sandbox import admin
from sandbox.state import SandboxState

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def state(tmp_path: Path) -> SandboxState:
    st = SandboxState(state_dir=tmp_path)
    st.base_url = "https://127.0.0.1:1"
    users = {
        f"u{i}": {
            "id": f"u{i}",
            "displayName": f"Person {i:03d}",
            "userPrincipalName": f"person{i:03d}@contoso.example",
            "userType": "Member",
            "accountEnabled": i % 2 == 0,
        }
        for i in range(120)
    }
    users["evil"] = {"id": "evil", "displayName": HOSTILE, "userPrincipalName": "evil@contoso.example",
                     "accountEnabled": True}
    st.directory = SimpleNamespace(users=users)
    st.org = SimpleNamespace(users={
        "005A": {"Id": "005A", "Username": "frozen@contoso.example", "Email": "f@contoso.example",
                 "IsActive": True, "IsFrozen": True},
        "005B": {"Id": "005B", "Username": "gone@contoso.example", "Email": "g@contoso.example",
                 "IsActive": False, "IsFrozen": False},
    })
    st.activity.add("webhook_delivery", url="https://hooks.example/<img src=x onerror=alert(1)>", status=202)
    return st


class Client:
    """Drives the admin routes in-process through httpx's ASGI transport (Starlette's TestClient is deprecated)."""

    def __init__(self, state: SandboxState) -> None:
        self.app = Starlette(routes=admin.install(state))

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
                return await client.get(path, params=params)

        return asyncio.run(go())


@pytest.fixture
def client(state: SandboxState) -> Client:
    return Client(state)


def test_the_page_needs_the_admin_token(client: Client) -> None:
    assert client.get("/_sandbox/").status_code == 401


def test_the_page_lists_users_on_both_sides_with_their_state(state: SandboxState, client: Client) -> None:
    response = client.get("/_sandbox/", params={"token": state.creds.admin_token})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "person000@contoso.example" in page
    assert "Entra users (121 of 121)" in page
    assert "frozen@contoso.example" in page and "gone@contoso.example" in page
    assert "Salesforce users (2 of 2)" in page
    assert '<span class="off">no</span>' in page, "an inactive user is shown as such"
    assert "delta_page_size" in page and "error_kinds" in page, "config and faults are shown"
    assert "webhook_delivery" in page, "API usage counters are shown"


def test_the_page_escapes_everything_from_the_stores(state: SandboxState, client: Client) -> None:
    page = client.get("/_sandbox/", params={"token": state.creds.admin_token, "q": "evil"}).text
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_search_term_is_escaped_when_echoed_back(state: SandboxState, client: Client) -> None:
    page = client.get("/_sandbox/", params={"token": state.creds.admin_token, "q": '"><b>boom'}).text
    assert '"><b>boom' not in page
    assert "&quot;&gt;&lt;b&gt;boom" in page


def test_users_are_paged_and_searchable(state: SandboxState, client: Client) -> None:
    token = state.creds.admin_token
    first = client.get("/_sandbox/", params={"token": token, "size": 50}).text
    assert "person049@contoso.example" in first and "person050@contoso.example" not in first
    assert "page 1 of 3" in first
    second = client.get("/_sandbox/", params={"token": token, "size": 50, "page": 1}).text
    assert "person050@contoso.example" in second and "person049@contoso.example" not in second
    found = client.get("/_sandbox/", params={"token": token, "q": "PERSON 007"}).text
    assert "Entra users (1 of 121)" in found and "person007@contoso.example" in found


def test_the_page_renders_before_the_stores_exist(tmp_path: Path) -> None:
    st = SandboxState(state_dir=tmp_path)
    client = Client(st)
    response = client.get("/_sandbox/", params={"token": st.creds.admin_token})
    assert response.status_code == 200
    assert "Entra users (0 of 0)" in response.text
