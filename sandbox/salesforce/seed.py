"""Reproducible org contents: setup data, a share of the tenant's users already provisioned, and CRM records.

Why bulk-built dicts: seeding 100,000 tenant users (30,000 of them present in the org) must take well under 30 s,
so the seed path writes complete rows through `Org.bulk_load` instead of running every write rule.

What the org holds after `seed_org` (all drawn from `random.Random(seed)`, so the same seed gives the same org):
- licences: Salesforce (seats = users present + tenant users not yet provisioned + 10, so the happy path fits and
  `Org.set_total_licenses` can tighten it), Salesforce Platform, Chatter Free, Identity; a permission set licence
  "Sales Cloud User";
- profiles (each with its profile-owned permission set): System Administrator, Standard User, Sales User,
  Standard Platform User, Chatter Free User, Identity User;
- a role tree (CEO > VP Sales > Sales Manager West/East > Account Executive West/East; CEO > VP Support > Support
  Agent; CEO > VP Marketing);
- permission sets Sales_Cloud_User (needs the PSL), Marketing_User, Service_Cloud_User, API_Only and the group
  Sales_Bundle; public groups All_Sales, Support_Team; queues Lead_Queue (Lead) and Support_Queue (Case,
  User_Provisioning_Request__c);
- the integration admin (run-as user of the connected app, System Administrator) and a human admin;
- `overlap` of the tenant's member users (Username = UPN; FederationIdentifier = UPN for ~85 %, none for the rest;
  ~10 % with drifted Title/Department (last modified by the human admin: direct edits), ~5 % with another Email,
  ~8 % already inactive), among them two members disabled in Entra but active here (the leavers a first `make run`
  revokes), two legacy org-only users;
- accounts, contacts, open and closed opportunities, leads (some owned by the lead queue), cases, tasks owned by
  active seeded users, and a default lead owner (deactivation blocker) and a default case owner.
- three Accounts for B2B guests: the catch-all "Individual Guests", "Northwind Partner Network" (Email_Domain__c =
  the first guest domain) and "Agency Example Inc" (the second guest domain, by Website only).
"""

from __future__ import annotations

import random
from typing import Any

from sandbox.graph.seed import GUEST_DOMAINS
from sandbox.salesforce.org import Org
from sandbox.salesforce.rules import compute

ORG_DOMAIN = "idsync-sandbox.example.com"
TIME_ZONES = ["America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin", "Europe/Paris",
              "Asia/Tokyo", "Australia/Sydney"]
#: The Account holding Contacts of guests with public mail addresses (the demo mapping's catch-all).
CATCH_ALL_ACCOUNT = "Individual Guests"
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "ja_JP", "en_AU"]


class _Builder:
    """Builds complete rows fast: one template per object, system fields filled once per row."""

    def __init__(self, org: Org, actor: str | None) -> None:
        self.org = org
        self.actor = actor
        self.now = org.now_str()
        self.templates: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def row(self, sobject: str, **values: Any) -> dict[str, Any]:
        tpl = self.templates.get(sobject)
        if tpl is None:
            od = self.org.schema[sobject]
            tpl = {f.name: (False if f.type == "boolean" else None) for f in od.fields.values()}
            for f in od.fields.values():
                if f.default is not None and not str(f.default).startswith("$"):
                    tpl[f.name] = f.default
            tpl.update(IsDeleted=False, CreatedDate=self.now, LastModifiedDate=self.now, SystemModstamp=self.now)
            self.templates[sobject] = tpl
        rec = dict(tpl)
        rec["Id"] = self.org.new_id(sobject)
        rec["CreatedById"] = rec["LastModifiedById"] = self.actor
        if "OwnerId" in rec:
            rec["OwnerId"] = self.actor
        rec.update(values)
        return rec

    def add(self, sobject: str, **values: Any) -> dict[str, Any]:
        rec = self.row(sobject, **values)
        compute(self.org, self.org.schema[sobject], rec, None)
        self.org.bulk_load(sobject, [rec])
        return rec


#: How many members disabled in Entra stay present and active in Salesforce (see sandbox.graph.seed).
SEEDED_LEAVERS = 2


def _keep_leavers(present: list[dict[str, Any]], members: list[dict[str, Any]]) -> set[str]:
    """Make SEEDED_LEAVERS of the members disabled in Entra present in the org; returns their UPNs, which the caller
    keeps active, so idsync has revocations to make on its first round.

    Swapped in place of enabled members (same positions, same count), so the random draws made per present user,
    and with them the rest of the org, stay as they were for the same seed.
    """
    disabled = [m for m in members if m.get("accountEnabled") is False]
    wanted = disabled[:min(SEEDED_LEAVERS, len(present))]
    chosen = {id(m) for m in present}
    for leaver in (m for m in wanted if id(m) not in chosen):
        wanted_ids = {id(w) for w in wanted}
        slot = next(i for i in range(len(present) - 1, -1, -1) if id(present[i]) not in wanted_ids)
        present[slot] = leaver
    return {m["userPrincipalName"] for m in wanted}


def _keep_one_switched_off(rows: list[tuple[dict[str, Any], dict[str, Any]]], leavers: set[str],
                           admin_id: str) -> None:
    """Every org with present users has at least one enabled Entra member whose Salesforce user a person switched
    off (reconciliation reports it for review). No random draw: the rest of the org stays as it was for the seed."""
    enabled = [(tu, rec) for tu, rec in rows if tu.get("accountEnabled") is not False and
               tu["userPrincipalName"] not in leavers]
    if not enabled or any(rec["IsActive"] is False for _tu, rec in enabled):
        return
    _tu, rec = enabled[-1]
    rec["IsActive"] = False
    rec["LastModifiedById"] = admin_id


def _alias(first: str | None, last: str | None, n: int) -> str:
    base = ((first or "")[:1] + (last or "user")).lower()
    base = "".join(ch for ch in base if ch.isalnum()) or "user"
    return (base[:5] + str(n % 1000))[:8]


def seed_org(state: Any, *, tenant_users: list[dict[str, Any]], seed: int, overlap: float = 0.3) -> dict[str, Any]:
    """Fill `state.org` (created by `install`); returns a summary with the notable ids for tests and the admin page."""
    org: Org = state.org
    rng = random.Random(seed)
    with state.lock:
        b = _Builder(org, None)
        members = [u for u in tenant_users
                   if (u.get("userType") or "Member") == "Member" and u.get("userPrincipalName")]
        members.sort(key=lambda u: str(u.get("id")))
        n_present = int(round(len(members) * overlap))
        present = rng.sample(members, n_present) if n_present else []
        leavers = _keep_leavers(present, members)

        # ---- licences, profiles, profile-owned permission sets
        sf_lic = b.add("UserLicense", Name="Salesforce", MasterLabel="Salesforce", LicenseDefinitionKey="SFDC",
                       Status="Active", TotalLicenses=len(members) + 14, UsedLicenses=0)
        platform = b.add("UserLicense", Name="Salesforce Platform", MasterLabel="Salesforce Platform",
                         LicenseDefinitionKey="AUL", Status="Active", TotalLicenses=25, UsedLicenses=0)
        chatter = b.add("UserLicense", Name="Chatter Free", MasterLabel="Chatter Free",
                        LicenseDefinitionKey="PID_Chatter", Status="Active", TotalLicenses=5000, UsedLicenses=0)
        identity = b.add("UserLicense", Name="Identity", MasterLabel="Identity", LicenseDefinitionKey="PID_Identity",
                         Status="Active", TotalLicenses=100, UsedLicenses=0)
        psl = b.add("PermissionSetLicense", DeveloperName="SalesCloudUserPsl", MasterLabel="Sales Cloud User",
                    PermissionSetLicenseKey="SalesCloudUserPsl", Status="Active",
                    TotalLicenses=max(20, len(members) // 2), UsedLicenses=0, ExpirationDate="2099-12-31")
        profiles: dict[str, dict[str, Any]] = {}
        for name, lic, is_admin in (
            ("System Administrator", sf_lic, True),
            ("Standard User", sf_lic, False),
            ("Sales User", sf_lic, False),
            ("Standard Platform User", platform, False),
            ("Chatter Free User", chatter, False),
            ("Identity User", identity, False),
        ):
            prof = b.add("Profile", Name=name, UserLicenseId=lic["Id"], PermissionsApiEnabled=lic is not chatter,
                         PermissionsManageUsers=is_admin, PermissionsModifyAllData=is_admin,
                         UserType="CsnOnly" if lic is chatter else "Standard")
            profiles[name] = prof
            b.add("PermissionSet", Name=f"X{prof['Id'][:15]}", Label=f"X{prof['Id'][:15]}", ProfileId=prof["Id"],
                  LicenseId=lic["Id"])
        profile_ps = {p["Id"]: ps["Id"] for ps in org.live["PermissionSet"].values()
                      for p in profiles.values() if ps["ProfileId"] == p["Id"]}

        # ---- roles
        roles: dict[str, dict[str, Any]] = {}
        for name, parent in (
            ("CEO", None), ("VP Sales", "CEO"), ("Sales Manager West", "VP Sales"), ("Sales Manager East", "VP Sales"),
            ("Account Executive West", "Sales Manager West"), ("Account Executive East", "Sales Manager East"),
            ("VP Support", "CEO"), ("Support Agent", "VP Support"), ("VP Marketing", "CEO"),
        ):
            roles[name] = b.add("UserRole", Name=name, DeveloperName=name.replace(" ", ""),
                                ParentRoleId=roles[parent]["Id"] if parent else None, RollupDescription=name)

        # ---- permission sets, group
        perm_sets = {
            "Sales_Cloud_User": b.add("PermissionSet", Name="Sales_Cloud_User", Label="Sales Cloud User",
                                      LicenseId=psl["Id"], Type="Regular"),
            "Marketing_User": b.add("PermissionSet", Name="Marketing_User", Label="Marketing User", Type="Regular"),
            "Service_Cloud_User": b.add("PermissionSet", Name="Service_Cloud_User", Label="Service Cloud User",
                                        Type="Regular"),
            "API_Only": b.add("PermissionSet", Name="API_Only", Label="API Only", PermissionsApiEnabled=True,
                              PermissionsApiUserOnly=True, Type="Regular"),
        }
        psg = b.add("PermissionSetGroup", DeveloperName="Sales_Bundle", MasterLabel="Sales Bundle", Status="Updated")

        # ---- groups and queues
        groups = {
            "All_Sales": b.add("Group", Name="All Sales", DeveloperName="All_Sales", Type="Regular"),
            "Support_Team": b.add("Group", Name="Support Team", DeveloperName="Support_Team", Type="Regular"),
            "Lead_Queue": b.add("Group", Name="Lead Queue", DeveloperName="Lead_Queue", Type="Queue",
                                Email=f"leads@{ORG_DOMAIN}"),
            "Support_Queue": b.add("Group", Name="Support Queue", DeveloperName="Support_Queue", Type="Queue",
                                   Email=f"support@{ORG_DOMAIN}"),
        }
        b.add("QueueSobject", QueueId=groups["Lead_Queue"]["Id"], SobjectType="Lead")
        b.add("QueueSobject", QueueId=groups["Support_Queue"]["Id"], SobjectType="Case")
        b.add("QueueSobject", QueueId=groups["Support_Queue"]["Id"], SobjectType="User_Provisioning_Request__c")

        # ---- users
        users: list[dict[str, Any]] = []

        def add_user(**values: Any) -> dict[str, Any]:
            n = len(users) + 1
            email = values.pop("Email", None) or values["Username"]
            values.setdefault("Alias", _alias(values.get("FirstName"), values.get("LastName"), n))
            values.setdefault("CommunityNickname", f"{email.split('@')[0][:30]}{n}")
            values.setdefault("TimeZoneSidKey", "America/Los_Angeles")
            values.setdefault("LocaleSidKey", "en_US")
            values.setdefault("EmailEncodingKey", "UTF-8")
            values.setdefault("LanguageLocaleKey", "en_US")
            values.setdefault("IsActive", True)
            rec = b.row("User", Email=email, **values)
            compute(org, org.schema["User"], rec, None)
            users.append(rec)
            return rec

        integration = add_user(Username=f"idsync.integration@{ORG_DOMAIN}", FirstName="idsync",
                               LastName="Integration", Alias="idsync", Title="Integration User",
                               ProfileId=profiles["System Administrator"]["Id"], CommunityNickname="idsync.integration")
        org.integration_user_id = integration["Id"]
        b.actor = integration["Id"]
        integration["CreatedById"] = integration["LastModifiedById"] = integration["Id"]
        admin = add_user(Username=f"admin@{ORG_DOMAIN}", FirstName="Sandbox", LastName="Admin", Alias="sadmin",
                         ProfileId=profiles["System Administrator"]["Id"], UserRoleId=roles["CEO"]["Id"], Title="CEO")
        sales_roles = [roles[r]["Id"] for r in ("Account Executive West", "Account Executive East",
                                                "Sales Manager West", "Sales Manager East")]
        present_rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i, tu in enumerate(present):
            upn = tu["userPrincipalName"]
            r = rng.random()
            profile = (profiles["Sales User"] if r < 0.45 else profiles["Standard User"] if r < 0.85
                       else profiles["Chatter Free User"] if r < 0.95 else profiles["Standard Platform User"])
            title, dept = tu.get("jobTitle"), tu.get("department")
            edited_by: dict[str, Any] = {}
            if rng.random() < 0.10:
                title = rng.choice(["Sales Rep", "Consultant", "Analyst", "Team Lead"])
                dept = rng.choice(["Legacy Sales", "Operations", None])
                # edited by hand in Setup by the human admin: reconciliation reports these as direct edits
                edited_by = {"LastModifiedById": admin["Id"]}
            email = tu.get("mail") or upn
            if rng.random() < 0.05:
                email = f"{upn.split('@')[0]}@legacy-mail.example.com"
            present_rows.append((tu, add_user(
                Username=upn,
                FirstName=(tu.get("givenName") or None) and str(tu["givenName"])[:40],
                LastName=str(tu.get("surname") or tu.get("displayName") or "User")[:80],
                Email=email,
                FederationIdentifier=upn if rng.random() < 0.85 else None,
                EmployeeNumber=(str(tu["employeeId"])[:20] if tu.get("employeeId") else None),
                Title=title[:80] if title else None,
                Department=dept[:80] if dept else None,
                ProfileId=profile["Id"],
                UserRoleId=rng.choice(sales_roles) if profile is profiles["Sales User"] else None,
                TimeZoneSidKey=rng.choice(TIME_ZONES),
                LocaleSidKey=rng.choice(LOCALES),
                IsActive=rng.random() >= 0.08 or upn in leavers,
                Alias=_alias(tu.get("givenName"), tu.get("surname"), i),
                **edited_by,
            )))
        _keep_one_switched_off(present_rows, leavers, admin["Id"])
        for j, (first, last) in enumerate((("Legacy", "Contractor"), ("Old", "Reporting"))):
            add_user(Username=f"{first.lower()}.{last.lower()}@{ORG_DOMAIN}", FirstName=first, LastName=last,
                     ProfileId=profiles["Standard User"]["Id"], IsActive=j == 0, Title="Legacy account")
        org.bulk_load("User", users)

        logins, psas = [], []
        for u in users:
            logins.append(b.row("UserLogin", UserId=u["Id"], IsFrozen=False, IsPasswordLocked=False))
            psas.append(b.row("PermissionSetAssignment", AssigneeId=u["Id"], PermissionSetId=profile_ps[u["ProfileId"]],
                              IsActive=True))
        sales_users = [u for u in users if u["ProfileId"] == profiles["Sales User"]["Id"] and u["IsActive"]]
        for u in sales_users[: len(sales_users) // 2]:
            b.add("PermissionSetLicenseAssign", AssigneeId=u["Id"], PermissionSetLicenseId=psl["Id"])
            psas.append(b.row("PermissionSetAssignment", AssigneeId=u["Id"],
                              PermissionSetId=perm_sets["Sales_Cloud_User"]["Id"], IsActive=True))
        for u in sales_users[::5]:
            psas.append(b.row("PermissionSetAssignment", AssigneeId=u["Id"],
                              PermissionSetId=perm_sets["Marketing_User"]["Id"], IsActive=True))
        psas.append(b.row("PermissionSetAssignment", AssigneeId=integration["Id"],
                          PermissionSetId=perm_sets["API_Only"]["Id"], IsActive=True))
        if sales_users:
            psas.append(b.row("PermissionSetAssignment", AssigneeId=sales_users[0]["Id"],
                              PermissionSetGroupId=psg["Id"], IsActive=True))
        org.bulk_load("UserLogin", logins)
        org.bulk_load("PermissionSetAssignment", psas)
        members_rows = [b.row("GroupMember", GroupId=groups["All_Sales"]["Id"], UserOrGroupId=u["Id"])
                        for u in sales_users[:200]]
        org.bulk_load("GroupMember", members_rows)

        # ---- CRM records owned by active seeded users
        owners = [u for u in users[2:] if u["IsActive"] and u["ProfileId"] in (profiles["Sales User"]["Id"],
                                                                               profiles["Standard User"]["Id"])]
        owners = owners or [admin]
        n_acc = max(5, min(5000, len(owners) // 3))
        industries = org.schema["Account"].fields["Industry"].picklist_values
        stages = org.schema["Opportunity"].fields["StageName"].picklist_values
        accounts: list[dict[str, Any]] = []
        contacts: list[dict[str, Any]] = []
        opps: list[dict[str, Any]] = []
        leads: list[dict[str, Any]] = []
        cases: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []

        def crm(sobject: str, bucket: list[dict[str, Any]], **values: Any) -> dict[str, Any]:
            rec = b.row(sobject, **values)
            compute(org, org.schema[sobject], rec, None)
            bucket.append(rec)
            return rec

        for i in range(n_acc):
            owner = owners[i % len(owners)]["Id"]
            acc = crm("Account", accounts, Name=f"Acme {i:05d} {rng.choice(['Corp', 'GmbH', 'Ltd', 'Inc'])}",
                      Industry=rng.choice(industries), OwnerId=owner, Type="Customer - Direct",
                      NumberOfEmployees=rng.randint(5, 5000))
            for k in range(2):
                crm("Contact", contacts, FirstName=rng.choice(["Ana", "Ben", "Chen", "Dara", "Eli"]),
                    LastName=f"Contact{i}-{k}", AccountId=acc["Id"], OwnerId=owner,
                    Email=f"contact{i}.{k}@customer{i}.example.com")
            crm("Opportunity", opps, Name=f"Deal {i}-open", AccountId=acc["Id"], OwnerId=owner,
                StageName=rng.choice(stages[:8]), CloseDate=f"2027-{rng.randint(1, 12):02d}-15",
                Amount=float(rng.randint(1, 200) * 1000))
            crm("Opportunity", opps, Name=f"Deal {i}-closed", AccountId=acc["Id"], OwnerId=owner,
                StageName=rng.choice(stages[8:]), CloseDate="2025-06-30", Amount=float(rng.randint(1, 200) * 1000))
            crm("Case", cases, Subject=f"Issue {i}", AccountId=acc["Id"], OwnerId=owner,
                Status=rng.choice(["New", "Working", "Closed"]), Origin="Web")
            crm("Task", tasks, Subject=f"Follow up {i}", WhatId=acc["Id"], OwnerId=owner,
                Status=rng.choice(["Not Started", "Completed"]), ActivityDate="2026-12-01")
        for i in range(max(5, n_acc // 2)):
            queue_owned = i % 7 == 0
            crm("Lead", leads, FirstName="Lead", LastName=f"Prospect{i}", Company=f"Prospect Co {i}",
                OwnerId=groups["Lead_Queue"]["Id"] if queue_owned else owners[i % len(owners)]["Id"],
                Status=rng.choice(["Open - Not Contacted", "Working - Contacted", "Closed - Converted"]),
                IsConverted=i % 5 == 4)
        # Accounts for B2B guests (no random draws: the rest of the org stays as it was for the same seed): a
        # catch-all for guests with public mail addresses, one partner found by its Email_Domain__c, one found by
        # the demo mapping's domain map (by Name), both for domains the tenant's seeded guests come from.
        guest_accounts = {
            "catch_all": crm("Account", accounts, Name=CATCH_ALL_ACCOUNT, Type="Other", OwnerId=admin["Id"],
                             Description="Contacts of B2B guests with public mail addresses"),
            "by_domain_field": crm("Account", accounts, Name="Northwind Partner Network", Type="Partner",
                                   OwnerId=admin["Id"], Email_Domain__c=GUEST_DOMAINS[0],
                                   Website=f"https://www.{GUEST_DOMAINS[0]}"),
            "by_domain_map": crm("Account", accounts, Name="Agency Example Inc", Type="Customer - Channel",
                                 OwnerId=admin["Id"], Website=f"https://{GUEST_DOMAINS[1]}"),
        }
        for name, rows in (("Account", accounts), ("Contact", contacts), ("Opportunity", opps), ("Lead", leads),
                           ("Case", cases), ("Task", tasks)):
            org.bulk_load(name, rows)

        # ---- deactivation blockers
        lead_owner = owners[0] if owners[0] is not admin else admin
        org.set_deactivation_blocker(lead_owner["Id"], "default_lead_owner")
        case_owner = owners[1] if len(owners) > 1 else None
        if case_owner is not None:
            org.set_deactivation_blocker(case_owner["Id"], "default_case_owner")

    summary = {
        "integration_user_id": integration["Id"],
        "admin_user_id": admin["Id"],
        "users_present": len(present),
        "default_lead_owner_id": lead_owner["Id"],
        "default_case_owner_id": case_owner["Id"] if case_owner else None,
        "profiles": {k: v["Id"] for k, v in profiles.items()},
        "permission_sets": {k: v["Id"] for k, v in perm_sets.items()},
        "queues": {k: v["Id"] for k, v in groups.items() if v["Type"] == "Queue"},
        "groups": {k: v["Id"] for k, v in groups.items() if v["Type"] == "Regular"},
        "roles": {k: v["Id"] for k, v in roles.items()},
        "guest_accounts": {k: v["Id"] for k, v in guest_accounts.items()},
        "licenses": {"Salesforce": sf_lic["Id"], "Chatter Free": chatter["Id"], "Sales Cloud User PSL": psl["Id"]},
    }
    org.seed_info = summary
    return summary
