"""The org's catalogue (profiles, roles, permission sets, groups, queues, licences, User fields), read in two calls.

Why cached per process for minutes: names rarely change, and a batch of 200 users must not spend calls on them.
Why refreshed early when a plan meets an unknown name: an admin who just created the permission set the mapping
names should not wait for the cache to expire (at most one early refresh per minute, so a misspelt name cannot turn
into a call per batch).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.engine import Catalog, FieldMeta, PermissionSetInfo

#: Six queries and the User describe in two composite calls (composite takes at most five queries per call).
CATALOG_QUERIES = (
    "SELECT Id, Name FROM Profile",
    "SELECT Id, Name, DeveloperName FROM UserRole",
    "SELECT Id, Name, LicenseId, IsOwnedByProfile, Type FROM PermissionSet",
    "SELECT Id, DeveloperName FROM PermissionSetGroup",
    "SELECT Id, DeveloperName, Type FROM Group WHERE Type IN ('Regular', 'Queue')",
)
PSL_QUERY = "SELECT Id, DeveloperName FROM PermissionSetLicense"
CACHE_TTL_S = 300.0
EARLY_REFRESH_S = 60.0


def read_catalog(sf: Any) -> Catalog:
    """Two composite calls: five name queries and the User describe, then the licences (a sixth query)."""
    queried, [describe] = sf.query_many_and_get([*CATALOG_QUERIES, PSL_QUERY], ["sobjects/User/describe"])
    profiles, roles, permission_sets, psgs, groups, licences = queried
    role_names: dict[str, str] = {}
    for role in roles:
        role_names[str(role["Name"])] = str(role["Id"])
    for role in roles:
        if role.get("DeveloperName"):
            role_names.setdefault(str(role["DeveloperName"]), str(role["Id"]))
    return Catalog(
        profiles={str(p["Name"]): str(p["Id"]) for p in profiles},
        roles=role_names,
        permission_sets={
            str(ps["Name"]): PermissionSetInfo(str(ps["Id"]), _license(ps))
            for ps in permission_sets
            # profile-owned and group-aggregate sets are not assignable entitlements of their own
            if not ps.get("IsOwnedByProfile") and ps.get("Type") not in ("Profile", "Group")
        },
        permission_set_groups={str(g["DeveloperName"]): str(g["Id"]) for g in psgs},
        public_groups={str(g["DeveloperName"]): str(g["Id"]) for g in groups if g.get("Type") == "Regular"},
        queues={str(g["DeveloperName"]): str(g["Id"]) for g in groups if g.get("Type") == "Queue"},
        permission_set_licenses={str(lic["Id"]): str(lic["DeveloperName"]) for lic in licences},
        user_fields={str(f["name"]): FieldMeta.from_describe(f) for f in describe.get("fields", [])},
    )


def _license(permission_set: dict[str, Any]) -> str | None:
    """The LicenseId when it is a permission set licence (key prefix 0PL); a user-licence id is not assignable."""
    license_id = permission_set.get("LicenseId")
    return str(license_id) if license_id and str(license_id).startswith("0PL") else None


class CatalogCache:
    """The catalogue for one process, refreshed every `ttl_s` or early (rate-limited) when asked."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, early_refresh_s: float = EARLY_REFRESH_S) -> None:
        self.ttl_s = ttl_s
        self.early_refresh_s = early_refresh_s
        self._catalog: Catalog | None = None
        self._read_at = 0.0
        self._stale = False
        self._lock = threading.Lock()

    def get(self, sf: Any) -> Catalog:
        with self._lock:
            age = time.monotonic() - self._read_at
            due = self._catalog is None or age > self.ttl_s or (self._stale and age > self.early_refresh_s)
            if due:
                self._catalog = read_catalog(sf)
                self._read_at = time.monotonic()
                self._stale = False
            assert self._catalog is not None
            return self._catalog

    def mark_stale(self) -> None:
        """A plan named something the catalogue lacks: read it again soon (it may have just been created)."""
        self._stale = True
