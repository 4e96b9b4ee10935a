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
        """Soft delete: the user goes to deleted items for 30 days."""
        self.http.delete(f"/users/{id_or_upn}").raise_for_status()

    def restore(self, object_id: str) -> None:
        """Restore a soft-deleted user from deleted items."""
        self.http.post(f"/directory/deletedItems/{object_id}/restore").raise_for_status()

    def purge(self, object_id: str) -> None:
        """Hard delete: remove a soft-deleted user from deleted items for good."""
        self.http.delete(f"/directory/deletedItems/{object_id}").raise_for_status()

    def update(self, id_or_upn: str, body: dict[str, Any]) -> None:
        self.http.patch(f"/users/{id_or_upn}", json=body).raise_for_status()


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

    def frozen(self, user_id: str) -> bool:
        rows = self.sf.query_all(format_soql("SELECT IsFrozen FROM UserLogin WHERE UserId = {}", user_id))["records"]
        return bool(rows and rows[0]["IsFrozen"])

    #: What a Salesforce admin would call a user's open records, per object (the usual "open" filters; the objects
    #: idsync's demo mapping re-owns).
    OPEN_RECORDS = {
        "Opportunity": ("Name", "IsClosed = false"),
        "Account": ("Name", None),
        "Task": ("Subject", "IsClosed = false"),
        "Lead": ("Name", "IsConverted = false"),
        "Case": ("CaseNumber", "IsClosed = false"),
    }

    def open_record_owners(self) -> set[str]:
        """Users owning at least one open opportunity or lead (two queries, whatever the org's size)."""
        owners: set[str] = set()
        for soql in ("SELECT OwnerId FROM Opportunity WHERE IsClosed = false",
                     "SELECT OwnerId FROM Lead WHERE IsConverted = false"):
            owners.update(str(r["OwnerId"]) for r in self.sf.query_all(soql)["records"])
        return owners

    def open_records(self, owner_id: str) -> dict[str, list[dict[str, Any]]]:
        """The open records `owner_id` owns, per object (one query per object)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for sobject, (label, condition) in self.OPEN_RECORDS.items():
            where = format_soql("OwnerId = {}", owner_id) + (f" AND {condition}" if condition else "")
            found[sobject] = self.sf.query_all(f"SELECT Id, {label}, OwnerId FROM {sobject} WHERE {where}")["records"]
        return found
