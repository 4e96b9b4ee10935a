"""Drive a running sandbox the way the people on each side would: an Entra admin through Microsoft Graph (msal +
httpx) and a Salesforce admin through the REST API (simple-salesforce).

Used by `python -m sandbox.tenant`, the integration tests and the benchmarks, so all three act through the public
APIs with the same, correctly configured clients. The CA is applied explicitly with `trust_env=False` on every
client: machines that export REQUESTS_CA_BUNDLE would otherwise silently replace it (the CA-bundle trap).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import msal
import requests
from simple_salesforce import Salesforce, format_soql

from sandbox.envfile import read_env_file

__all__ = ["GraphAdmin", "OrgAdmin", "read_env_file", "requests_session"]

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]


def requests_session(ca: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    return session


class GraphAdmin:
    """An Entra admin acting through Microsoft Graph with an app-only token from msal."""

    def __init__(self, env: dict[str, str]) -> None:
        ca = env["IDSYNC_CA_BUNDLE"]
        app = msal.ConfidentialClientApplication(
            env["IDSYNC_GRAPH_CLIENT_ID"], client_credential=env["IDSYNC_GRAPH_CLIENT_SECRET"],
            authority=env["IDSYNC_GRAPH_AUTHORITY"], instance_discovery=False, http_client=requests_session(ca),
        )
        result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
        if "access_token" not in result:
            raise RuntimeError(f"token request failed: {result.get('error')}: {result.get('error_description')}")
        self.http = httpx.Client(
            base_url=env["IDSYNC_GRAPH_URL"], verify=ssl.create_default_context(cafile=ca), trust_env=False,
            headers={"Authorization": f"Bearer {result['access_token']}"}, timeout=30,
        )

    def users(self, filter_: str | None = None, select: str = "id,userPrincipalName,displayName,accountEnabled,userType"
              ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"$top": 999, "$select": select}
        if filter_:
            params["$filter"] = filter_
        out: list[dict[str, Any]] = []
        url: str | None = "/users"
        while url:
            body = self.http.get(url, params=params if url == "/users" else None).raise_for_status().json()
            out += body["value"]
            url = body.get("@odata.nextLink")
        return out

    def user(self, id_or_upn: str) -> dict[str, Any]:
        return self.http.get(f"/users/{id_or_upn}", params={"$select": "id,userPrincipalName,accountEnabled"}
                             ).raise_for_status().json()

    def disable(self, id_or_upn: str) -> None:
        self.http.patch(f"/users/{id_or_upn}", json={"accountEnabled": False}).raise_for_status()

    def enable(self, id_or_upn: str) -> None:
        self.http.patch(f"/users/{id_or_upn}", json={"accountEnabled": True}).raise_for_status()

    def delete(self, id_or_upn: str) -> None:
        self.http.delete(f"/users/{id_or_upn}").raise_for_status()

    def invite(self, email: str, display_name: str | None = None) -> dict[str, Any]:
        """`POST /invitations` as an admin inviting a B2B guest; returns the invitation (with `invitedUser.id`)."""
        body = {"invitedUserEmailAddress": email, "inviteRedirectUrl": "https://myapps.microsoft.com",
                "sendInvitationMessage": False}
        if display_name:
            body["invitedUserDisplayName"] = display_name
        return dict(self.http.post("/invitations", json=body).raise_for_status().json())

    def group(self, display_name: str) -> dict[str, Any] | None:
        quoted = display_name.replace("'", "''")
        found = self.http.get("/groups", params={"$filter": f"displayName eq '{quoted}'",
                                                 "$select": "id,displayName"}).raise_for_status().json()["value"]
        return found[0] if found else None

    def add_member(self, group_id: str, user_id: str) -> None:
        ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user_id}"}
        self.http.post(f"/groups/{group_id}/members/$ref", json=ref).raise_for_status()

    def update(self, id_or_upn: str, **values: Any) -> None:
        self.http.patch(f"/users/{id_or_upn}", json=values).raise_for_status()


class OrgAdmin:
    """A Salesforce admin looking at the org through simple-salesforce (direct mode, client-credentials token)."""

    def __init__(self, env: dict[str, str], version: str = "62.0") -> None:
        session = requests_session(env["IDSYNC_CA_BUNDLE"])
        grant = session.post(
            f"{env['IDSYNC_SF_URL']}/services/oauth2/token", data={"grant_type": "client_credentials"},
            auth=(env["IDSYNC_SF_CLIENT_ID"], env["IDSYNC_SF_CLIENT_SECRET"]), timeout=30,
        )
        grant.raise_for_status()
        self.sf = Salesforce(instance_url=env["IDSYNC_SF_URL"], session_id=grant.json()["access_token"],
                             session=session, version=version)

    def user(self, username: str) -> dict[str, Any] | None:
        rows = self.sf.query_all(format_soql("SELECT Id, IsActive, Username FROM User WHERE Username = {}",
                                             username))["records"]
        return rows[0] if rows else None

    def contacts(self, email: str) -> list[dict[str, Any]]:
        soql = format_soql("SELECT Id, FirstName, LastName, Email, AccountId, Account.Name, Entra_Object_Id__c, "
                           "Entra_Status__c, Invitation_State__c, Relationship__c FROM Contact WHERE Email = {}",
                           email)
        return list(self.sf.query_all(soql)["records"])

    def insert_request(self, **fields: Any) -> str:
        """A User_Provisioning_Request__c inserted through the REST API, as a Salesforce user (or a Flow) would."""
        requests: Any = getattr(self.sf, "User_Provisioning_Request__c")  # noqa: B009 - simple-salesforce's typing
        return str(requests.create(fields)["id"])

    def request(self, request_id: str) -> dict[str, Any]:
        requests: Any = getattr(self.sf, "User_Provisioning_Request__c")  # noqa: B009 - simple-salesforce's typing
        return dict(requests.get(request_id))

    def frozen(self, user_id: str) -> bool:
        rows = self.sf.query_all(format_soql("SELECT IsFrozen FROM UserLogin WHERE UserId = {}", user_id))["records"]
        return bool(rows and rows[0]["IsFrozen"])
