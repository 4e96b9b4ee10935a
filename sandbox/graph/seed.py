"""A reproducible, realistic tenant: departments, titles, a manager tree, offices, cost centres, groups, some
disabled users and some B2B guests.

Everything derives from `random.Random(seed)` (ids too), so the Salesforce seed and tests can rely on the same
tenant every time, and 100,000 users seed in a few seconds (objects are built directly, without per-user
validation or change notifications).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

TENANTS = ("contoso", "fabrikam", "northwind", "tailspin", "adatum", "woodgrove", "litware", "proseware")
FIRST = (
    "Ada Alan Alex Alice Amara Ana Andrea Arjun Ben Bianca Carla Chen Chloe Daniel David Diego Elena Emma Erik Fatima "
    "Felix Grace Hana Hugo Ines Isaac Ivan Jack Jade James Jana Javier Julia Kai Karin Kenji Lara Leo Lina Lucas "
    "Maya Mateo Mia Miguel Nadia Nina Noah Olga Omar Paula Pedro Priya Rafael Rosa Sam Sara Sofia Tom Yara Zoe"
).split()
LAST = (
    "Adams Bauer Becker Chen Costa Dubois Evans Fischer Garcia Gomez Hansen Ito Jensen Kim Kowalski Larsen Lee "
    "Lopez Martin Meyer Moreau Muller Nakamura Nguyen Novak Okafor Olsen Patel Perez Petrov Quinn Rossi Santos "
    "Schmidt Silva Singh Smith Suzuki Tanaka Taylor Thomas Wagner Walker Wang Weber Williams Wilson Yamamoto Young"
).split()
#: department -> (division, titles)
DEPARTMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Sales": (
        "Go-To-Market",
        ("Account Executive", "Sales Manager", "Sales Development Representative", "Sales Engineer"),
    ),
    "Marketing": ("Go-To-Market", ("Marketing Manager", "Content Strategist", "Product Marketing Manager")),
    "Customer Support": ("Go-To-Market", ("Support Engineer", "Support Team Lead", "Customer Success Manager")),
    "Engineering": (
        "Research & Development",
        ("Software Engineer", "Senior Software Engineer", "Engineering Manager", "QA Engineer"),
    ),
    "Product": ("Research & Development", ("Product Manager", "UX Designer")),
    "Finance": ("General & Administrative", ("Accountant", "Financial Analyst", "Controller")),
    "Human Resources": ("General & Administrative", ("HR Business Partner", "Recruiter")),
    "IT": ("General & Administrative", ("Systems Administrator", "IT Support Specialist", "Security Engineer")),
    "Legal": ("General & Administrative", ("Counsel", "Paralegal")),
}
#: office -> (city, country, usageLocation, preferredLanguage, region)
OFFICES: dict[str, tuple[str, str, str, str, str]] = {
    "Seattle HQ": ("Seattle", "United States", "US", "en-US", "West"),
    "San Francisco": ("San Francisco", "United States", "US", "en-US", "West"),
    "Austin": ("Austin", "United States", "US", "en-US", "Central"),
    "New York": ("New York", "United States", "US", "en-US", "East"),
    "Toronto": ("Toronto", "Canada", "CA", "en-CA", "East"),
    "London": ("London", "United Kingdom", "GB", "en-GB", "EMEA"),
    "Munich": ("Munich", "Germany", "DE", "de-DE", "EMEA"),
    "Paris": ("Paris", "France", "FR", "fr-FR", "EMEA"),
    "Sydney": ("Sydney", "Australia", "AU", "en-AU", "APAC"),
}
#: Every tenant of at least MIN_USERS_FOR_LEAVERS users has at least SEEDED_LEAVERS members disabled in Entra; the
#: Salesforce seed keeps that many of them present and active there, so a first `make run` revokes them at once
#: (what the README promises) instead of depending on a 3 % draw.
SEEDED_LEAVERS = 2
MIN_USERS_FOR_LEAVERS = 20
GUEST_DOMAINS = ("partner.example.org", "agency.example.net", "consulting.example.com", "vendor.example.io")
GROUP_NAMES = (
    "All Employees",
    "Sales Team West",
    "Account Executives",
    "Sales Team East",
    "Engineering",
    "Customer Support",
    "Managers",
    "Contractors",
    "Marketing",
    "Finance",
    "IT Admins",
    "EMEA Staff",
    "Guests",
    # last, and seeded empty (its members draw nothing from the random stream; its id does): a tenant of up to 13
    # groups is the same as before it was added, larger ones differ from the 15th group on. The demo mapping's
    # guest rule and the README's `invite --group Distributors` name it.
    "Distributors",
)


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _members_for(
    name: str, users: list[dict[str, Any]], office_region: dict[str, str], managers: set[str], rng: random.Random
) -> list[str]:
    members = [u for u in users if u["userType"] == "Member"]
    if name == "All Employees":
        chosen = members
    elif name == "Sales Team West":
        chosen = [u for u in members if u["department"] == "Sales" and office_region[u["officeLocation"]] == "West"]
    elif name == "Sales Team East":
        chosen = [u for u in members if u["department"] == "Sales" and office_region[u["officeLocation"]] == "East"]
    elif name == "Account Executives":
        chosen = [u for u in members if u["jobTitle"] == "Account Executive"]
    elif name in DEPARTMENTS:
        chosen = [u for u in members if u["department"] == name]
    elif name == "Managers":
        chosen = [u for u in members if u["id"] in managers]
    elif name == "Contractors":
        chosen = [u for u in members if u["employeeType"] == "Contractor"]
    elif name == "IT Admins":
        chosen = [u for u in members if u["department"] == "IT"]
    elif name == "EMEA Staff":
        chosen = [u for u in members if office_region[u["officeLocation"]] == "EMEA"]
    elif name == "Guests":
        chosen = [u for u in users if u["userType"] == "Guest"]
    elif name == "Distributors":
        chosen = []  # partners' guests join it when invited (`sandbox.tenant invite --group Distributors`)
    else:
        chosen = rng.sample(members, min(len(members), rng.randint(3, 40)))
    return [u["id"] for u in chosen]


def _ensure_leavers(users: list[dict[str, Any]], seed: int) -> None:
    """Disable members until SEEDED_LEAVERS are disabled, never the CEO (the manager tree's root).

    A separate random stream, so every other seeded value stays what it was for the same seed.
    """
    if len(users) < MIN_USERS_FOR_LEAVERS:
        return
    members = [u for u in users[1:] if u["userType"] == "Member"]
    missing = SEEDED_LEAVERS - sum(1 for u in members if not u["accountEnabled"])
    enabled = [u for u in members if u["accountEnabled"]]
    for user in random.Random(f"leavers-{seed}").sample(enabled, max(0, min(missing, len(enabled)))):
        user["accountEnabled"] = False


def seed_directory(state: Any, *, users: int, groups: int, seed: int) -> None:
    """Fill `state.directory` with `users` users and `groups` groups, identically for the same `seed`."""
    rng = random.Random(seed)
    d = state.directory
    name = TENANTS[seed % len(TENANTS)]
    d.tenant_name = name
    d.tenant_domain = f"{name}{seed}.onmicrosoft.com"
    custom = f"{name}.example.com"
    d.verified_domains = [d.tenant_domain, custom]
    epoch = datetime(2019, 1, 1, tzinfo=UTC)
    depts = list(DEPARTMENTS)
    dept_weights = [30, 8, 14, 25, 6, 5, 4, 5, 3]
    offices = list(OFFICES)
    office_region = {o: OFFICES[o][4] for o in offices}
    taken: set[str] = set()
    created: list[dict[str, Any]] = []
    with state.lock:
        for i in range(users):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            dept = rng.choices(depts, dept_weights)[0] if i else "Sales"
            division, titles = DEPARTMENTS[dept]
            office = rng.choice(offices)
            city, country, usage, lang, _region = OFFICES[office]
            hired = epoch + timedelta(days=rng.randrange(0, 2400))
            guest = i > 0 and rng.random() < 0.03
            alias = f"{first}.{last}".lower()
            if alias in taken:
                alias = f"{alias}{i}"
            taken.add(alias)
            user: dict[str, Any] = {
                "id": _id(rng),
                "accountEnabled": not (i > 0 and rng.random() < 0.03),
                "displayName": f"{first} {last}",
                "givenName": first,
                "surname": last,
                "createdDateTime": (hired - timedelta(days=rng.randrange(1, 30))).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "preferredLanguage": lang,
                "usageLocation": usage,
                "officeLocation": office,
                "city": city,
                "country": country,
                "showInAddressList": None,
            }
            if guest:
                ext_domain = rng.choice(GUEST_DOMAINS)
                email = f"{alias}@{ext_domain}"
                accepted = rng.random() < 0.8
                user.update(
                    {
                        "userPrincipalName": f"{alias}_{ext_domain}#EXT#@{d.tenant_domain}",
                        "mailNickname": f"{alias}_{ext_domain}#EXT#",
                        "mail": email,
                        "otherMails": [email],
                        "userType": "Guest",
                        "creationType": "Invitation",
                        "externalUserState": "Accepted" if accepted else "PendingAcceptance",
                        "externalUserStateChangeDateTime": user["createdDateTime"],
                        "companyName": ext_domain.split(".")[0].title(),
                        "showInAddressList": False,
                    }
                )
            else:
                title = rng.choice(titles) if i else "Chief Executive Officer"
                code = dept[:3].upper()
                user.update(
                    {
                        "userPrincipalName": f"{alias}@{custom}",
                        "mailNickname": alias,
                        "mail": f"{alias}@{custom}",
                        "userType": "Member",
                        "jobTitle": title,
                        "department": dept,
                        "companyName": name.title(),
                        "employeeId": f"E{100000 + i}",
                        "employeeType": "Contractor" if rng.random() < 0.08 else "Employee",
                        "employeeHireDate": hired.strftime("%Y-%m-%dT00:00:00Z"),
                        "employeeOrgData": {"division": division, "costCenter": f"CC-{code}-{rng.randint(1, 4):02d}"},
                        "businessPhones": [f"+1 425 555 {rng.randrange(10000):04d}"],
                        "mobilePhone": f"+1 206 555 {rng.randrange(10000):04d}" if rng.random() < 0.6 else None,
                    }
                )
            created.append(d.create_user(user, notify=False, validate=False))
        _ensure_leavers(created, seed)
        # manager tree: each member reports to someone earlier (CEO at the root), mostly in the same department
        managers: set[str] = set()
        first_by_dept: dict[str, list[str]] = {}
        members = [u for u in created if u["userType"] == "Member"]
        for idx, user in enumerate(members):
            if idx == 0:
                first_by_dept.setdefault(user["department"], []).append(user["id"])
                continue
            pool = first_by_dept.get(user["department"])
            if pool and rng.random() < 0.9:
                mgr = pool[rng.randrange(min(len(pool), max(1, len(pool) // 4 + 1)))]
            else:
                mgr = members[rng.randrange(max(1, idx // 10 + 1))]["id"]
            d.seed_manager(user["id"], mgr)
            managers.add(mgr)
            first_by_dept.setdefault(user["department"], []).append(user["id"])
        names = list(GROUP_NAMES[:groups]) + [
            f"Project Team {n}" for n in range(1, max(0, groups - len(GROUP_NAMES)) + 1)
        ]
        for gname in names:
            nick = gname.lower().replace(" ", "-").replace("&", "and")
            unified = gname.startswith("Project Team") or gname == "All Employees"
            group = d.create_group(
                {
                    "id": _id(rng),
                    "displayName": gname,
                    "description": f"{gname} ({name.title()})",
                    "mailEnabled": unified,
                    "mailNickname": nick,
                    "securityEnabled": True,
                    "groupTypes": ["Unified"] if unified else [],
                    "visibility": "Private" if unified else None,
                    "createdDateTime": epoch.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                notify=False,
                validate=False,
            )
            ids = _members_for(gname, created, office_region, managers, rng)
            d.seed_members(group["id"], [(uid, "user") for uid in ids])
