"""Drive a running sandbox the way the people on each side would: an Entra admin through Microsoft Graph (msal +
httpx) and a Salesforce admin through the REST API (simple-salesforce).

Used by `python -m sandbox.tenant`, the integration tests and the benchmarks, so all three act through the public
APIs with the same, correctly configured clients. The CA is applied explicitly with `trust_env=False` on every
client: machines that export REQUESTS_CA_BUNDLE would otherwise silently replace it (docs/decisions.md#ca-bundle).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import httpx
import msal
import requests
from simple_salesforce import Salesforce, format_soql

from sandbox.envfile import read_env_file

__all__ = ["GraphAdmin", "OrgAdmin", "read_env_file", "requests_session", "segment"]

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]


def segment(value: str) -> str:
    """`value` (an object id or a UPN) as one URL path segment: percent-encoded except `@`, as Graph expects.

    A guest's UPN carries `#EXT#`; unencoded, the `#` would start the URL's fragment and cut the path there (Graph
    wants `%23`). `/`, `?`, `%` and spaces are encoded too, so a value never spills into another segment.
    """
    return quote(value, safe="@")


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
        return self.http.get(f"/users/{segment(id_or_upn)}",
                             params={"$select": "id,userPrincipalName,accountEnabled,userType,mail"}
                             ).raise_for_status().json()

    def disable(self, id_or_upn: str) -> None:
        self.http.patch(f"/users/{segment(id_or_upn)}", json={"accountEnabled": False}).raise_for_status()

    def enable(self, id_or_upn: str) -> None:
        self.http.patch(f"/users/{segment(id_or_upn)}", json={"accountEnabled": True}).raise_for_status()

    def delete(self, id_or_upn: str) -> None:
        """Soft delete: the user goes to deleted items for 30 days."""
        self.http.delete(f"/users/{segment(id_or_upn)}").raise_for_status()

    def verified_domain(self) -> str:
        """The tenant's custom domain (the one its members' UPNs use), else its onmicrosoft.com domain."""
        org = self.http.get("/organization").raise_for_status().json()["value"][0]
        domains = [d["name"] for d in org.get("verifiedDomains", [])]
        custom = [d for d in domains if not d.endswith(".onmicrosoft.com")]
        return (custom or domains)[0]

    def create_user(self, given: str, surname: str, upn: str, **attributes: Any) -> dict[str, Any]:
        body = {
            "accountEnabled": True, "displayName": f"{given} {surname}", "givenName": given, "surname": surname,
            "mailNickname": upn.split("@")[0].replace(".", "")[:60], "userPrincipalName": upn, "mail": upn,
            "passwordProfile": {"forceChangePasswordNextSignIn": True, "password": "Sandbox-Passw0rd!"},
            **{k: v for k, v in attributes.items() if v is not None},
        }
        created: dict[str, Any] = self.http.post("/users", json=body).raise_for_status().json()
        return created

    def update(self, id_or_upn: str, changes: dict[str, Any] | None = None, **values: Any) -> None:
        """PATCH the user with `changes` and/or keyword values (a None value clears the attribute)."""
        self.http.patch(f"/users/{segment(id_or_upn)}", json={**(changes or {}), **values}).raise_for_status()

    def set_manager(self, id_or_upn: str, manager: str) -> None:
        manager_id = self.user(manager)["id"]
        self.http.put(f"/users/{segment(id_or_upn)}/manager/$ref",
                      json={"@odata.id": f"{self.http.base_url}/directoryObjects/{manager_id}"}).raise_for_status()

    def group(self, name: str) -> dict[str, Any]:
        found = self.http.get("/groups", params={"$filter": f"displayName eq '{name.replace(chr(39), chr(39) * 2)}'",
                                                  "$select": "id,displayName"}).raise_for_status().json()["value"]
        if not found:
            raise LookupError(f"no group named {name!r} in Entra")
        return dict(found[0])

    def add_to_group(self, id_or_upn: str, group: str) -> None:
        user_id = self.user(id_or_upn)["id"]
        self.http.post(f"/groups/{segment(self.group(group)['id'])}/members/$ref",
                       json={"@odata.id": f"{self.http.base_url}/directoryObjects/{user_id}"}).raise_for_status()

    def remove_from_group(self, id_or_upn: str, group: str) -> None:
        user_id = self.user(id_or_upn)["id"]
        group_id = self.group(group)["id"]
        self.http.delete(f"/groups/{segment(group_id)}/members/{segment(user_id)}/$ref").raise_for_status()

    def groups_of(self, id_or_upn: str) -> list[str]:
        body = self.http.get(f"/users/{segment(id_or_upn)}/memberOf", params={"$select": "displayName"}
                             ).raise_for_status().json()
        return sorted(g.get("displayName", "") for g in body["value"])

    def restore(self, object_id: str) -> None:
        """Restore a soft-deleted user from deleted items."""
        self.http.post(f"/directory/deletedItems/{segment(object_id)}/restore").raise_for_status()

    def purge(self, object_id: str) -> None:
        """Hard delete: remove a soft-deleted user from deleted items for good."""
        self.http.delete(f"/directory/deletedItems/{segment(object_id)}").raise_for_status()

    def invite(self, email: str, display_name: str | None = None) -> dict[str, Any]:
        """`POST /invitations` as an admin inviting a B2B guest; returns the invitation (with `invitedUser.id`)."""
        body = {"invitedUserEmailAddress": email, "inviteRedirectUrl": "https://myapps.microsoft.com",
                "sendInvitationMessage": False}
        if display_name:
            body["invitedUserDisplayName"] = display_name
        return dict(self.http.post("/invitations", json=body).raise_for_status().json())

    def add_member(self, group_id: str, user_id: str) -> None:
        ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user_id}"}
        self.http.post(f"/groups/{segment(group_id)}/members/$ref", json=ref).raise_for_status()



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

    #: what `contacts` and `guest_contact(s)` read of a Contact: the fields idsync's demo mapping writes for a guest
    CONTACT_FIELDS = ("Id, FirstName, LastName, Email, AccountId, Account.Name, Entra_Object_Id__c, Entra_Status__c, "
                      "Invitation_State__c, Relationship__c")

    def contacts(self, email: str) -> list[dict[str, Any]]:
        soql = format_soql(f"SELECT {self.CONTACT_FIELDS} FROM Contact WHERE Email = {{}}", email)
        return list(self.sf.query_all(soql)["records"])

    def guest_contact(self, entra_id: str, email: str | None) -> dict[str, Any] | None:
        """The Contact idsync keeps for a B2B guest: the one whose link field Entra_Object_Id__c is the guest's
        object id, else (not linked, e.g. made by hand) one with the guest's email and no link to another guest."""
        rows = self.sf.query_all(format_soql(f"SELECT {self.CONTACT_FIELDS} FROM Contact "
                                             "WHERE Entra_Object_Id__c = {}", entra_id))["records"]
        if not rows and email:
            rows = [c for c in self.contacts(email) if not c.get("Entra_Object_Id__c")]
        return dict(rows[0]) if rows else None

    def guest_contacts(self, guests: dict[str, str | None]) -> dict[str, dict[str, Any]]:
        """`guest_contact` for many guests (Entra object id -> email) at once: one query for every linked Contact,
        then one per 200 emails of the guests left, whatever the number of guests."""
        linked = self.sf.query_all(f"SELECT {self.CONTACT_FIELDS} FROM Contact WHERE Entra_Object_Id__c != null")
        found = {str(c["Entra_Object_Id__c"]): dict(c) for c in linked["records"] if c["Entra_Object_Id__c"] in guests}
        by_email = {email.lower(): entra_id for entra_id, email in guests.items() if email and entra_id not in found}
        emails = sorted(by_email)
        for start in range(0, len(emails), 200):
            rows = self.sf.query_all(format_soql(f"SELECT {self.CONTACT_FIELDS} FROM Contact WHERE Email IN {{}} "
                                                 "AND Entra_Object_Id__c = null", emails[start:start + 200]))
            for c in rows["records"]:
                entra_id = by_email.get(str(c["Email"] or "").lower())
                if entra_id is not None:
                    found.setdefault(entra_id, dict(c))
        return found

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

    def view(self, username: str) -> dict[str, Any] | None:
        """What an admin checks on a user's page: key fields, profile, role, permission sets, groups and queues."""
        rows = self.sf.query_all(format_soql(
            "SELECT Id, IsActive, Username, Title, Department, MobilePhone, EmployeeNumber, FederationIdentifier, "
            "ManagerId, ProfileId, UserRoleId FROM User WHERE Username = {}", username))["records"]
        if not rows:
            return None
        user = rows[0]
        names = self._names()
        psas = self.sf.query_all(format_soql("SELECT PermissionSetId, PermissionSetGroupId FROM "
                                             "PermissionSetAssignment WHERE AssigneeId = {}", user["Id"]))["records"]
        groups = self.sf.query_all(format_soql("SELECT GroupId FROM GroupMember WHERE UserOrGroupId = {}",
                                               user["Id"]))["records"]
        manager = None
        if user.get("ManagerId"):
            found = self.sf.query_all(format_soql("SELECT Username FROM User WHERE Id = {}", user["ManagerId"]))
            manager = found["records"][0]["Username"] if found["records"] else user["ManagerId"]
        return {
            "Username": user["Username"], "IsActive": user["IsActive"], "IsFrozen": self.frozen(user["Id"]),
            "Profile": names.get(user.get("ProfileId") or ""), "Role": names.get(user.get("UserRoleId") or ""),
            "Title": user.get("Title"), "Department": user.get("Department"), "MobilePhone": user.get("MobilePhone"),
            "EmployeeNumber": user.get("EmployeeNumber"), "FederationIdentifier": user.get("FederationIdentifier"),
            "Manager": manager,
            "PermissionSets": sorted(names[p["PermissionSetId"]] for p in psas
                                     if p.get("PermissionSetId") in names and not p.get("PermissionSetGroupId")),
            "PermissionSetGroups": sorted(names.get(p["PermissionSetGroupId"], "?") for p in psas
                                          if p.get("PermissionSetGroupId")),
            "Groups": sorted(names.get(g["GroupId"], "?") for g in groups),
        }

    def assign_permission_set(self, username: str, permission_set: str) -> None:
        """What a Salesforce admin does by hand in Setup: assign a permission set to a user."""
        user = self.user(username)
        if user is None:
            raise LookupError(f"no Salesforce user {username!r}")
        found = self.sf.query_all(format_soql("SELECT Id FROM PermissionSet WHERE Name = {}", permission_set))
        if not found["records"]:
            raise LookupError(f"no permission set {permission_set!r} in the org")
        self.sf.restful("sobjects/PermissionSetAssignment", method="POST",
                        json={"AssigneeId": user["Id"], "PermissionSetId": found["records"][0]["Id"]})

    def _names(self) -> dict[str, str]:
        """Id -> API name for profiles, roles, permission sets (not profile-owned), groups, queues, PSGs."""
        names: dict[str, str] = {}
        queries = ("SELECT Id, Name FROM Profile", "SELECT Id, Name FROM UserRole",
                   "SELECT Id, Name, IsOwnedByProfile FROM PermissionSet",
                   "SELECT Id, DeveloperName FROM PermissionSetGroup", "SELECT Id, DeveloperName FROM Group")
        for soql in queries:
            for row in self.sf.query_all(soql)["records"]:
                if row.get("IsOwnedByProfile"):
                    continue
                names[row["Id"]] = row.get("Name") or row.get("DeveloperName")
        return names

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
