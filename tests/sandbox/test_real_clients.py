"""Done-when #2 of the sandbox issue, literally: unmodified msal, httpx and simple-salesforce against the sandbox's
HTTPS endpoints, configured only from the settings `SandboxServer.env()` hands out (as the env file does)."""

from __future__ import annotations

import ssl

import httpx
import msal
import requests
from simple_salesforce import Salesforce

from sandbox.server import SandboxServer
from tests.sandbox.simple_salesforce_typed import sobject


def _requests_session(ca: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the machine's REQUESTS_CA_BUNDLE must not override the sandbox CA
    session.verify = ca
    return session


def _follow(http: httpx.Client, url: str, token: str) -> tuple[int, int, str]:
    pages = items = 0
    while True:
        body = http.get(url, headers={"Authorization": f"Bearer {token}"}).raise_for_status().json()
        pages, items = pages + 1, items + len(body["value"])
        if "@odata.deltaLink" in body:
            return pages, items, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]


def test_msal_token_then_httpx_pages_users_and_follows_users_and_groups_delta_to_a_delta_link(sandbox: SandboxServer):
    env = sandbox.env()
    ca = env["IDSYNC_CA_BUNDLE"]
    app = msal.ConfidentialClientApplication(
        env["IDSYNC_GRAPH_CLIENT_ID"], client_credential=env["IDSYNC_GRAPH_CLIENT_SECRET"],
        authority=env["IDSYNC_GRAPH_AUTHORITY"], instance_discovery=False, http_client=_requests_session(ca),
    )
    result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    token = result["access_token"]
    assert app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])["token_source"] == "cache"

    with httpx.Client(verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=20) as http:
        users, url = [], f"{env['IDSYNC_GRAPH_URL']}/users?$top=25"
        while url:
            body = http.get(url, headers={"Authorization": f"Bearer {token}"}).raise_for_status().json()
            users += body["value"]
            url = body.get("@odata.nextLink")
        assert len(users) == len(sandbox.state.directory.users)

        user_pages, user_items, user_link = _follow(http, f"{env['IDSYNC_GRAPH_URL']}/users/delta", token)
        group_pages, group_items, group_link = _follow(
            http, f"{env['IDSYNC_GRAPH_URL']}/groups/delta?$select=displayName,members", token)
    assert user_items >= len(users) and "$deltatoken=" in user_link
    assert group_items >= len(sandbox.state.directory.groups) and "$deltatoken=" in group_link


def test_simple_salesforce_direct_mode_queries_creates_updates_and_posts_collections(sandbox: SandboxServer):
    env = sandbox.env()
    session = _requests_session(env["IDSYNC_CA_BUNDLE"])
    grant = session.post(f"{env['IDSYNC_SF_URL']}/services/oauth2/token", data={"grant_type": "client_credentials"},
                         auth=(env["IDSYNC_SF_CLIENT_ID"], env["IDSYNC_SF_CLIENT_SECRET"]), timeout=20)
    grant.raise_for_status()
    sf = Salesforce(instance_url=grant.json()["instance_url"], session_id=grant.json()["access_token"],
                    session=session)  # simple-salesforce's default API version, 59.0

    users = sf.query_all("SELECT Id, Username, Profile.Name FROM User WHERE IsActive = true")
    assert users["totalSize"] == len(users["records"]) > 0
    profile_id = sf.query("SELECT Id FROM Profile WHERE Name = 'Standard User'")["records"][0]["Id"]

    created = sobject(sf, "User").create({
        "Username": "real.client@idsync-sandbox.example.com", "LastName": "Client", "Email": "rc@example.com",
        "Alias": "rclient", "TimeZoneSidKey": "America/Los_Angeles", "LocaleSidKey": "en_US",
        "EmailEncodingKey": "UTF-8", "LanguageLocaleKey": "en_US", "ProfileId": profile_id,
    })
    assert created["success"] is True
    assert sobject(sf, "User").update(created["id"], {"Title": "Tester"}) == 204
    assert sobject(sf, "User").get(created["id"])["Title"] == "Tester"

    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "Name": "Real Client Ltd"},
        {"attributes": {"type": "Account"}},  # Name missing
    ]})
    assert isinstance(results, list)
    assert results[0]["success"] is True
    assert results[1]["success"] is False and results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
