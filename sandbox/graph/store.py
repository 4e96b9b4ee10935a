"""The tenant's directory: users, groups, manager links, memberships, the recycle bin, and a change log.

Everything Graph serves is derived from here. Each mutation gets one number from a tenant-wide, monotonically
increasing sequence and records which properties it touched, so delta queries can answer "what changed
since token T, restricted to the tracked properties" without scanning the whole tenant on every page. Listeners
(the change-notification side) hear every user/group mutation as a `Change`.
"""

from __future__ import annotations

import bisect
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.graph.errors import bad_request, not_found

#: the properties of `onPremisesExtensionAttributes` (Exchange custom attributes 1-15)
EXTENSION_ATTRIBUTES: frozenset[str] = frozenset(f"extensionAttribute{n}" for n in range(1, 16))
#: every user property the sandbox stores (https://learn.microsoft.com/graph/api/resources/user); a user's Graph JSON
#: has all of them
USER_PROPERTIES: tuple[str, ...] = (
    "id",
    "accountEnabled",
    "ageGroup",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "givenName",
    "imAddresses",
    "jobTitle",
    "lastPasswordChangeDateTime",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "postalCode",
    "preferredLanguage",
    "proxyAddresses",
    "showInAddressList",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
)
USER_PROPERTY_SET: frozenset[str] = frozenset(USER_PROPERTIES)
#: returned when a request has no $select (Graph's default user properties)
USER_DEFAULT: tuple[str, ...] = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
_USER_LIST_PROPS = {"businessPhones", "imAddresses", "otherMails", "proxyAddresses"}
_USER_READ_ONLY = {
    "id",
    "createdDateTime",
    "deletedDateTime",
    "creationType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "lastPasswordChangeDateTime",
    "onPremisesSyncEnabled",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesSamAccountName",
    "onPremisesUserPrincipalName",
    "proxyAddresses",
}
_USER_MAX_LEN = {
    "displayName": 256,
    "givenName": 64,
    "surname": 64,
    "jobTitle": 128,
    "department": 64,
    "companyName": 64,
    "mobilePhone": 64,
    "mailNickname": 64,
    "employeeId": 16,
    "officeLocation": 128,
    "city": 128,
    "country": 128,
    "usageLocation": 2,
}
#: stored outside the main directory store; `$select` on them is 501, and delta does not track them
USER_UNSUPPORTED: frozenset[str] = frozenset(
    {"skills", "interests", "schools", "pastProjects", "responsibilities", "aboutMe", "birthday", "hireDate", "mySite"}
)
GROUP_PROPERTIES: tuple[str, ...] = (
    "id",
    "classification",
    "createdDateTime",
    "deletedDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "proxyAddresses",
    "renewedDateTime",
    "securityEnabled",
    "securityIdentifier",
    "visibility",
)
_GROUP_READ_ONLY = {
    "id",
    "createdDateTime",
    "deletedDateTime",
    "renewedDateTime",
    "securityIdentifier",
    "proxyAddresses",
}

ChangeType = Literal["updated", "deleted"]
Resource = Literal["users", "groups"]


@dataclass(frozen=True)
class Change:
    """One user/group mutation as change notifications see it (create and soft delete arrive as `updated`)."""

    resource: Resource
    object_id: str
    change_type: ChangeType


@dataclass
class Tracked:
    """Delta bookkeeping for one object, kept after a hard delete as a tombstone."""

    resource: Resource
    #: change sequence numbers of this object's log entries, ascending
    seqs: list[int] = field(default_factory=list)
    #: property (or relationship: "manager", "members") -> sequence number of its last change
    prop_seq: dict[str, int] = field(default_factory=dict)
    #: sequence number of creation or of the last restore (the object is "new" to a round that began before it)
    born_seq: int = 0
    removed: Literal["changed", "deleted"] | None = None
    removed_seq: int = 0
    #: previous manager id when the manager was removed (manager@delta carries the removal)
    removed_manager: str | None = None
    #: groups only: member id -> (sequence number, still a member, "user"|"group")
    member_changes: dict[str, tuple[int, bool, str]] = field(default_factory=dict)


class ChangeLog:
    """Append-only (seq, object id) pairs of one resource; seq ascends, so a round's start is a bisect away."""

    def __init__(self) -> None:
        self.seq: list[int] = []
        self.ids: list[str] = []

    def append(self, seq: int, object_id: str) -> None:
        self.seq.append(seq)
        self.ids.append(object_id)

    def position_after(self, seq: int) -> int:
        return bisect.bisect_right(self.seq, seq)


def _now_iso(state: Any) -> str:
    return state.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


class Directory:
    """All directory objects of the one sandbox tenant. Methods take `state.lock` themselves (it is re-entrant)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.lock = state.lock
        self.tenant_name = "contoso"
        self.tenant_domain = "contoso.onmicrosoft.com"
        self.verified_domains: list[str] = [self.tenant_domain]
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.deleted_users: dict[str, dict[str, Any]] = {}
        self.deleted_groups: dict[str, dict[str, Any]] = {}
        self.upn_index: dict[str, str] = {}
        #: user id -> manager id, and the reverse
        self.managers: dict[str, str] = {}
        self.reports: dict[str, set[str]] = {}
        #: group id -> {member id: "user"|"group"} (insertion ordered), and member id -> group ids
        self.members: dict[str, dict[str, str]] = {}
        self.member_of: dict[str, set[str]] = {}
        #: write-only passwordProfile per user
        self.passwords: dict[str, dict[str, Any]] = {}
        #: what a soft delete took away, handed back on restore
        self._parked: dict[str, dict[str, Any]] = {}
        self.tracking: dict[str, Tracked] = {}
        self.logs: dict[str, ChangeLog] = {"users": ChangeLog(), "groups": ChangeLog()}
        self.seq = 0
        #: delta/skip tokens -> round state (server-side, so tokens stay short and opaque); see sandbox.graph.delta
        self.tokens: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._listeners: list[Callable[[Change], None]] = []
        #: the Graph router (set by `sandbox.graph.install`), so control code can dispatch Graph requests
        self.router: Any = None

    # ----------------------------------------------------------------------------------------- change plumbing
    def add_listener(self, fn: Callable[[Change], None]) -> None:
        """`fn` is called under the sandbox lock after each mutation; it must only enqueue, never block."""
        self._listeners.append(fn)

    def _emit(self, change: Change) -> None:
        for fn in list(self._listeners):
            try:
                fn(change)
            except Exception as exc:  # a broken listener must not break the directory
                self.state.activity.add("graph_listener_error", error=repr(exc))

    def _touch(
        self,
        resource: Resource,
        object_id: str,
        props: Iterable[str],
        *,
        born: bool = False,
        removed: Literal["changed", "deleted"] | None = None,
        notify: bool = True,
    ) -> int:
        self.seq += 1
        seq = self.seq
        meta = self.tracking.get(object_id)
        if meta is None:
            meta = self.tracking[object_id] = Tracked(resource)
        meta.seqs.append(seq)
        self.logs[resource].append(seq, object_id)
        for p in props:
            meta.prop_seq[p] = seq
        if born:
            meta.born_seq = seq
            meta.removed = None
        if removed:
            meta.removed = removed
            meta.removed_seq = seq
        if notify:
            self._emit(Change(resource, object_id, "deleted" if removed == "deleted" else "updated"))
        return seq

    # ------------------------------------------------------------------------------------------------ lookups
    def user(self, key: str) -> dict[str, Any]:
        """A live user by object id or userPrincipalName (case-insensitive), else 404."""
        with self.lock:
            found = self.users.get(key)
            if found is None:
                uid = self.upn_index.get(key.lower())
                found = self.users.get(uid) if uid else None
            if found is None:
                raise not_found(key)
            return found

    def group(self, key: str) -> dict[str, Any]:
        with self.lock:
            found = self.groups.get(key)
            if found is None:
                raise not_found(key)
            return found

    def object(self, key: str) -> tuple[str, dict[str, Any]]:
        """Any live directory object: ("user"|"group", json)."""
        with self.lock:
            if key in self.groups:
                return "group", self.groups[key]
            return "user", self.user(key)

    def manager_of(self, user_id: str) -> str | None:
        mgr = self.managers.get(user_id)
        return mgr if mgr in self.users else None

    # ------------------------------------------------------------------------------------------------- users
    def _check_user_values(self, values: dict[str, Any], *, creating: bool) -> None:
        for key, value in values.items():
            if key == "passwordProfile" or key.endswith("@odata.bind") or key == "@odata.type":
                continue
            if key not in USER_PROPERTY_SET:
                raise bad_request(f"Property '{key}' does not exist on type 'microsoft.graph.user'.", "BadRequest")
            if key in _USER_READ_ONLY and not (creating and key in ("onPremisesSyncEnabled",)):
                raise bad_request(f"Property '{key}' is read-only and cannot be set.")
            invalid = bad_request(f"Invalid value specified for property '{key}' of resource 'User'.")
            if key in ("accountEnabled", "showInAddressList") and not isinstance(value, bool):
                raise invalid
            if key in _USER_LIST_PROPS and not isinstance(value, list):
                raise invalid
            if key == "businessPhones" and len(value) > 1:
                raise bad_request("Only one business phone number can be set.")
            if key == "employeeOrgData" and value is not None:
                if not isinstance(value, dict) or set(value) - {"division", "costCenter", "@odata.type"}:
                    raise invalid
            if key == "onPremisesExtensionAttributes" and value is not None:
                # Cloud-only users may set these 15 strings (up to 1024 characters each) on create and update.
                if not isinstance(value, dict) or set(value) - EXTENSION_ATTRIBUTES - {"@odata.type"} or any(
                    v is not None and (not isinstance(v, str) or len(v) > 1024) for v in value.values()
                ):
                    raise invalid
            if key == "userType" and value not in ("Member", "Guest"):
                raise invalid
            if isinstance(value, str) and len(value) > _USER_MAX_LEN.get(key, 1024):
                raise invalid
            required_text = key in ("displayName", "userPrincipalName", "mailNickname")
            if required_text and (not isinstance(value, str) or not value):
                raise invalid
        upn = values.get("userPrincipalName")
        if upn is not None:
            local, at, domain = upn.rpartition("@")
            if not at or not local or domain.lower() not in {d.lower() for d in self.verified_domains}:
                raise bad_request(
                    "The domain portion of the userPrincipalName property is invalid. You must use one of the "
                    "verified domain names in your organization."
                )
            if any(ord(c) > 127 or c in ' \\"<>()[];:,' for c in local.replace("#EXT#", "")):
                raise bad_request("Invalid value specified for property 'userPrincipalName' of resource 'User'.")

    def _index_upn(self, upn: str, user_id: str) -> None:
        owner = self.upn_index.get(upn.lower())
        if owner is not None and owner != user_id:
            raise bad_request("Another object with the same value for property userPrincipalName already exists.")
        self.upn_index[upn.lower()] = user_id

    def create_user(self, body: dict[str, Any], *, notify: bool = True, validate: bool = True) -> dict[str, Any]:
        """POST /users semantics: required properties, verified-domain UPN, unique UPN; returns the stored JSON."""
        with self.lock:
            if validate:
                for required in ("accountEnabled", "displayName", "mailNickname", "userPrincipalName"):
                    if body.get(required) in (None, ""):
                        raise bad_request(f"Invalid value specified for property '{required}' of resource 'User'.")
                profile = body.get("passwordProfile")
                if not isinstance(profile, dict) or not profile.get("password"):
                    raise bad_request("Invalid value specified for property 'passwordProfile' of resource 'User'.")
                self._check_user_values(
                    {k: v for k, v in body.items() if k not in ("creationType", "userType_", "onPremisesSyncEnabled")},
                    creating=True,
                )
            user: dict[str, Any] = dict.fromkeys(USER_PROPERTIES)
            for key in _USER_LIST_PROPS:
                user[key] = []
            user.update({k: v for k, v in body.items() if k in USER_PROPERTY_SET})
            user["id"] = body.get("id") or str(uuid.uuid4())
            user["userType"] = user.get("userType") or "Member"
            user["createdDateTime"] = user.get("createdDateTime") or _now_iso(self.state)
            if user.get("showInAddressList") is None and validate:
                user["showInAddressList"] = None
            if user.get("mail") and not user["proxyAddresses"]:
                user["proxyAddresses"] = [f"SMTP:{user['mail']}"]
            if user["id"] in self.users or user["id"] in self.tracking:
                raise bad_request("Another object with the same value for property id already exists.")
            self._index_upn(user["userPrincipalName"], user["id"])
            self.users[user["id"]] = user
            if "passwordProfile" in body:
                self.passwords[user["id"]] = dict(body["passwordProfile"])
            props = [k for k, v in user.items() if v is not None and v != []]
            self._touch("users", user["id"], props, born=True, notify=notify)
            return user

    def update_user(self, key: str, patch: dict[str, Any]) -> dict[str, Any]:
        """PATCH /users/{id}: records a change only for properties whose value really changed."""
        with self.lock:
            user = self.user(key)
            self._check_user_values(patch, creating=False)
            changed: list[str] = []
            if "userPrincipalName" in patch and patch["userPrincipalName"].lower() != user["userPrincipalName"].lower():
                self._index_upn(patch["userPrincipalName"], user["id"])
                self.upn_index.pop(user["userPrincipalName"].lower(), None)
            for k, v in patch.items():
                if k == "passwordProfile":
                    self.passwords[user["id"]] = dict(v or {})
                    user["lastPasswordChangeDateTime"] = _now_iso(self.state)
                    changed.append("lastPasswordChangeDateTime")
                    continue
                if k not in USER_PROPERTIES:
                    continue
                if k == "onPremisesExtensionAttributes" and isinstance(v, dict):
                    v = {**(user.get(k) or {}), **{n: x for n, x in v.items() if n != "@odata.type"}}  # merged
                if user.get(k) != v:
                    user[k] = v
                    changed.append(k)
                    if k == "mail" and v:
                        user["proxyAddresses"] = [f"SMTP:{v}"] + [
                            p.lower() if p.startswith("SMTP:") else p for p in user["proxyAddresses"] if p[5:] != v
                        ]
                        changed.append("proxyAddresses")
            if changed:
                self._touch("users", user["id"], changed)
            return user

    def set_manager(self, user_key: str, manager_id: str) -> None:
        with self.lock:
            user = self.user(user_key)
            manager = self.user(manager_id)
            if manager["id"] == user["id"]:
                raise bad_request("Invalid value specified for property 'manager' of resource 'User'.")
            old = self.managers.get(user["id"])
            if old == manager["id"]:
                return
            if old:
                self.reports.get(old, set()).discard(user["id"])
            self.managers[user["id"]] = manager["id"]
            self.reports.setdefault(manager["id"], set()).add(user["id"])
            self._touch("users", user["id"], ["manager"])

    def remove_manager(self, user_key: str) -> None:
        with self.lock:
            user = self.user(user_key)
            old = self.managers.pop(user["id"], None)
            if old is None:
                raise not_found(user["id"])
            self.reports.get(old, set()).discard(user["id"])
            self._touch("users", user["id"], ["manager"])
            self.tracking[user["id"]].removed_manager = old

    def soft_delete_user(self, key: str) -> None:
        """DELETE /users/{id}: into the recycle bin for 30 days; memberships are parked for a restore."""
        with self.lock:
            user = self.user(key)
            uid = user["id"]
            groups = sorted(self.member_of.get(uid, set()))
            for gid in groups:
                self._remove_member(gid, uid)
            self._parked[uid] = {"groups": groups, "manager": self.managers.get(uid)}
            del self.users[uid]
            self.upn_index.pop(user["userPrincipalName"].lower(), None)
            user["deletedDateTime"] = _now_iso(self.state)
            self.deleted_users[uid] = user
            self._touch("users", uid, ["deletedDateTime"], removed="changed")

    def restore(self, object_id: str) -> tuple[str, dict[str, Any]]:
        """POST /directory/deletedItems/{id}/restore."""
        with self.lock:
            if object_id in self.deleted_users:
                user = self.deleted_users[object_id]
                if user["userPrincipalName"].lower() in self.upn_index:
                    raise bad_request(
                        "Another object with the same value for property userPrincipalName already exists."
                    )
                del self.deleted_users[object_id]
                user["deletedDateTime"] = None
                self.users[object_id] = user
                self.upn_index[user["userPrincipalName"].lower()] = object_id
                parked = self._parked.pop(object_id, {})
                self._touch("users", object_id, ["deletedDateTime"], born=True)
                for gid in parked.get("groups", []):
                    if gid in self.groups and object_id not in self.members.get(gid, {}):
                        self._add_member(gid, object_id, "user")
                return "user", user
            if object_id in self.deleted_groups:
                group = self.deleted_groups.pop(object_id)
                group["deletedDateTime"] = None
                self.groups[object_id] = group
                self.members.setdefault(object_id, {})
                self._touch("groups", object_id, ["deletedDateTime"], born=True)
                return "group", group
            raise not_found(object_id)

    def hard_delete(self, object_id: str) -> None:
        """DELETE /directory/deletedItems/{id}: gone for good (`@removed: deleted`, change type `deleted`)."""
        with self.lock:
            if object_id in self.deleted_users:
                del self.deleted_users[object_id]
                self._parked.pop(object_id, None)
                self.passwords.pop(object_id, None)
                mgr = self.managers.pop(object_id, None)
                if mgr:
                    self.reports.get(mgr, set()).discard(object_id)
                for report in list(self.reports.pop(object_id, set())):
                    if self.managers.get(report) == object_id:
                        del self.managers[report]
                        if report in self.users:
                            self._touch("users", report, ["manager"])
                            self.tracking[report].removed_manager = object_id
                self._touch("users", object_id, [], removed="deleted")
                return
            if object_id in self.deleted_groups:
                del self.deleted_groups[object_id]
                self._purge_group(object_id)
                return
            raise not_found(object_id)

    def accept_invitation(self, user_id: str) -> dict[str, Any]:
        """What a guest redeeming the invitation does (control hook; real Graph has no API for it)."""
        with self.lock:
            user = self.user(user_id)
            if user.get("externalUserState") != "PendingAcceptance":
                raise bad_request("The invitation for this user is not pending acceptance.")
            user["externalUserState"] = "Accepted"
            user["externalUserStateChangeDateTime"] = _now_iso(self.state)
            self._touch("users", user["id"], ["externalUserState", "externalUserStateChangeDateTime"])
            return user

    # ------------------------------------------------------------------------------------------------ groups
    def create_group(self, body: dict[str, Any], *, notify: bool = True, validate: bool = True) -> dict[str, Any]:
        with self.lock:
            if validate:
                for required in ("displayName", "mailEnabled", "mailNickname", "securityEnabled"):
                    if body.get(required) is None:
                        raise bad_request(f"Invalid value specified for property '{required}' of resource 'Group'.")
                for key in body:
                    if key not in GROUP_PROPERTIES and not key.endswith("@odata.bind") and key != "@odata.type":
                        raise bad_request(
                            f"Property '{key}' does not exist on type 'microsoft.graph.group'.", "BadRequest"
                        )
            group: dict[str, Any] = dict.fromkeys(GROUP_PROPERTIES)
            group.update({"groupTypes": [], "proxyAddresses": []})
            group.update({k: v for k, v in body.items() if k in GROUP_PROPERTIES})
            group["id"] = body.get("id") or str(uuid.uuid4())
            group["createdDateTime"] = group.get("createdDateTime") or _now_iso(self.state)
            group["renewedDateTime"] = group["createdDateTime"]
            group["securityIdentifier"] = group.get("securityIdentifier") or "S-1-12-1-" + "-".join(
                str(secrets.randbelow(2**31)) for _ in range(4)
            )
            if group.get("mailEnabled") and not group.get("mail"):
                group["mail"] = f"{group['mailNickname']}@{self.verified_domains[-1]}"
            if group.get("mail"):
                group["proxyAddresses"] = [f"SMTP:{group['mail']}"]
            bind = body.get("members@odata.bind") or []
            member_ids = [str(ref).rstrip("/").rsplit("/", 1)[-1] for ref in bind]
            kinds = [self.object(mid)[0] for mid in member_ids] if validate else []
            self.groups[group["id"]] = group
            self.members[group["id"]] = {}
            self._touch(
                "groups", group["id"], [k for k, v in group.items() if v not in (None, [])], born=True, notify=notify
            )
            for mid, kind in zip(member_ids, kinds, strict=False):
                self._add_member(group["id"], mid, kind, notify=notify)
            return group

    def update_group(self, key: str, patch: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            group = self.group(key)
            changed = []
            for k, v in patch.items():
                if k not in GROUP_PROPERTIES:
                    raise bad_request(f"Property '{k}' does not exist on type 'microsoft.graph.group'.", "BadRequest")
                if k in _GROUP_READ_ONLY:
                    raise bad_request(f"Property '{k}' is read-only and cannot be set.")
                if group.get(k) != v:
                    group[k] = v
                    changed.append(k)
            if changed:
                self._touch("groups", group["id"], changed)
            return group

    def delete_group(self, key: str) -> None:
        """Microsoft 365 groups go to the recycle bin; security groups are deleted permanently at once."""
        with self.lock:
            group = self.group(key)
            gid = group["id"]
            if "Unified" in (group.get("groupTypes") or []):
                del self.groups[gid]
                group["deletedDateTime"] = _now_iso(self.state)
                self.deleted_groups[gid] = group
                self._touch("groups", gid, ["deletedDateTime"], removed="changed")
            else:
                del self.groups[gid]
                self._purge_group(gid)

    def _purge_group(self, gid: str) -> None:
        for mid in list(self.members.pop(gid, {})):
            self.member_of.get(mid, set()).discard(gid)
        for parent in sorted(self.member_of.pop(gid, set())):
            if parent in self.members:
                self._remove_member(parent, gid)
        self._touch("groups", gid, [], removed="deleted")

    def _add_member(self, gid: str, mid: str, kind: str, *, notify: bool = True) -> None:
        self.members[gid][mid] = kind
        self.member_of.setdefault(mid, set()).add(gid)
        seq = self._touch("groups", gid, ["members"], notify=notify)
        self.tracking[gid].member_changes[mid] = (seq, True, kind)

    def _remove_member(self, gid: str, mid: str) -> None:
        kind = self.members[gid].pop(mid)
        self.member_of.get(mid, set()).discard(gid)
        seq = self._touch("groups", gid, ["members"])
        self.tracking[gid].member_changes[mid] = (seq, False, kind)

    def seed_members(self, gid: str, members: Iterable[tuple[str, str]]) -> None:
        """Bulk membership for seeding: one change for the whole set (100,000-member groups seed in O(n))."""
        with self.lock:
            table = self.members[gid]
            added = [(mid, kind) for mid, kind in members if mid not in table]
            if not added:
                return
            seq = self._touch("groups", gid, ["members"], notify=False)
            changes = self.tracking[gid].member_changes
            for mid, kind in added:
                table[mid] = kind
                self.member_of.setdefault(mid, set()).add(gid)
                changes[mid] = (seq, True, kind)

    def seed_manager(self, user_id: str, manager_id: str) -> None:
        """Manager link set at seeding time, part of the user's creation (no change of its own)."""
        with self.lock:
            self.managers[user_id] = manager_id
            self.reports.setdefault(manager_id, set()).add(user_id)
            meta = self.tracking[user_id]
            meta.prop_seq["manager"] = meta.born_seq

    def add_member(self, group_key: str, member_id: str) -> None:
        with self.lock:
            group = self.group(group_key)
            kind, obj = self.object(member_id)
            if obj["id"] in self.members[group["id"]]:
                raise bad_request(
                    "One or more added object references already exist for the following modified properties: "
                    "'members'."
                )
            if obj["id"] == group["id"]:
                raise bad_request("A group cannot be a member of itself.")
            self._add_member(group["id"], obj["id"], kind)

    def remove_member(self, group_key: str, member_id: str) -> None:
        with self.lock:
            group = self.group(group_key)
            if member_id not in self.members[group["id"]]:
                raise not_found(member_id)
            self._remove_member(group["id"], member_id)

    def transitive_members(self, gid: str) -> list[tuple[str, str]]:
        """Breadth-first over nested groups, each object once (nested groups themselves included, like Graph)."""
        with self.lock:
            seen: dict[str, str] = {}
            queue = [gid]
            visited = {gid}
            while queue:
                current = queue.pop(0)
                for mid, kind in self.members.get(current, {}).items():
                    if mid not in seen:
                        seen[mid] = kind
                    if kind == "group" and mid not in visited:
                        visited.add(mid)
                        queue.append(mid)
            return list(seen.items())

    def transitive_member_of(self, object_id: str) -> list[str]:
        with self.lock:
            out: list[str] = []
            queue = sorted(self.member_of.get(object_id, set()))
            seen = set(queue)
            while queue:
                gid = queue.pop(0)
                out.append(gid)
                for parent in sorted(self.member_of.get(gid, set())):
                    if parent not in seen:
                        seen.add(parent)
                        queue.append(parent)
            return out

