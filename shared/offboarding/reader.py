"""Gathers what `offboarding_plan` needs for one user, in as few Salesforce calls as the rules allow.

Why composite queries: every query the plan needs that does not depend on another (the leaver's User row and
UserLogin, the owners the rules name, queues and the objects they take, round-robin group members, licences, and
the open records of every configured object) goes through `SalesforceClient.query_many`, five queries per call, and
Salesforce counts a composite request as ONE call. The demo mapping (five objects, a fallback user, two queues)
reads everything in two calls. Only round robin needs a second round: the members' IsActive (GroupMember's member is
polymorphic, so its fields cannot be selected through the relationship).

The records queries select only records the leaver still owns (`OwnerId = leaver`): records already moved by an
earlier, interrupted run are not read again, which is what makes re-running the transfer harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from simple_salesforce.format import format_soql

from shared.entra_status import DISABLED, EntraState, read_entra_user
from shared.errors import NotFound
from shared.mapping.model import Mapping
from shared.mapping.offboarding import RuleKind
from shared.offboarding.leave_of_absence import on_leave_of_absence
from shared.offboarding.plan import HeldLicence, Leaver, OpenRecord, Owner, OwnerDirectory, Queue

#: The field that names a record for people, where it is not `Name`.
LABEL_FIELDS = {"Case": "CaseNumber", "Task": "Subject", "Event": "Subject", "Contract": "ContractNumber"}


class QueryApi(Protocol):
    def query_many(self, soqls: list[str]) -> list[list[dict[str, Any]]]: ...

    def find_user(self, entra_id: str | None, federation_id: str | None,
                  username: str | None) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class OffboardingInputs:
    leaver: Leaver
    records: dict[str, list[OpenRecord]] = field(default_factory=dict)
    directory: OwnerDirectory = field(default_factory=OwnerDirectory)
    licences: tuple[HeldLicence, ...] = ()


def label_field(sobject: str) -> str:
    return LABEL_FIELDS.get(sobject, "Name")


def records_query(sobject: str, owner_id: str, open_filter: str | None) -> str:
    """The leaver's open records of one object: `SELECT Id, OwnerId, Name FROM X WHERE OwnerId = ... AND (...)`."""
    where = format_soql("OwnerId = {}", owner_id)
    if open_filter:
        where += f" AND ({open_filter})"
    return f"SELECT Id, OwnerId, {label_field(sobject)} FROM {sobject} WHERE {where} ORDER BY Id"


def read_offboarding(
    sf: QueryApi,
    graph: Any,
    links: Any,
    grants: Any,
    mapping: Mapping | None,
    entra_id: str,
    *,
    state: EntraState | None = None,
) -> OffboardingInputs:
    """Everything the plan needs for `entra_id`; `state` when the caller already read Graph (or previews a leaver:
    pass a disabled state for an enabled user)."""
    state = state or read_entra_user(graph, entra_id)
    link = links.get_link(entra_id)
    upn = state.upn or (link.upn if link else None)
    sf_user_id = link.sf_user_id if link and link.sf_user_id else None
    if sf_user_id is None:
        found = sf.find_user(entra_id, upn, upn)
        sf_user_id = str(found["Id"]) if found else None
    if sf_user_id is None:
        return OffboardingInputs(Leaver(entra_id, upn, state.status, None))
    if state.enabled:
        return OffboardingInputs(Leaver(entra_id, upn, state.status, sf_user_id))

    section = mapping.offboarding if mapping is not None else None
    on_leave = on_leave_of_absence(graph, entra_id, state.status, mapping)
    moving = section is not None and not on_leave
    rules = [rule for spec in section.objects.values() for rule in spec.rules] if section is not None and moving else []
    kinds = {rule.kind for rule in rules}
    usernames = sorted({rule.user for rule in rules if rule.user}
                       | ({section.fallback_owner} if section and section.fallback_owner and RuleKind.FALLBACK in kinds
                          else set()), key=str.lower)
    queue_names = sorted({rule.queue for rule in rules if rule.queue})
    group_names = sorted({rule.round_robin for rule in rules if rule.round_robin})

    entra_manager_sf, manager_note = (None, None)
    if RuleKind.MANAGER in kinds:
        entra_manager_sf, manager_note = _entra_manager(graph, links, entra_id, state)

    queries: dict[str, str] = {
        "user": format_soql("SELECT Id, Username, IsActive, ManagerId, Manager.Username, Manager.IsActive FROM User "
                            "WHERE Id = {}", sf_user_id),
        "login": format_soql("SELECT Id, IsFrozen FROM UserLogin WHERE UserId = {}", sf_user_id),
    }
    if usernames or entra_manager_sf:
        clauses = [format_soql("Username IN {}", usernames)] if usernames else []
        if entra_manager_sf:
            clauses.append(format_soql("Id = {}", entra_manager_sf))
        queries["owners"] = f"SELECT Id, Username, IsActive FROM User WHERE {' OR '.join(clauses)}"
    if queue_names or group_names:
        queries["groups"] = format_soql("SELECT Id, DeveloperName, Type FROM Group WHERE DeveloperName IN {}",
                                        [*queue_names, *group_names])
    if queue_names:
        queries["queue_objects"] = format_soql("SELECT QueueId, SobjectType FROM QueueSobject WHERE "
                                               "Queue.DeveloperName IN {}", queue_names)
    if group_names:
        queries["members"] = format_soql("SELECT GroupId, UserOrGroupId FROM GroupMember WHERE "
                                         "Group.DeveloperName IN {} AND Group.Type = 'Regular'", group_names)
    if section is not None and moving and section.reclaim_licences:
        queries["psl"] = format_soql("SELECT Id, PermissionSetLicenseId, PermissionSetLicense.DeveloperName FROM "
                                     "PermissionSetLicenseAssign WHERE AssigneeId = {}", sf_user_id)
        queries["ps"] = format_soql("SELECT Id, PermissionSetId, PermissionSet.Name, PermissionSet.LicenseId FROM "
                                    "PermissionSetAssignment WHERE AssigneeId = {} AND PermissionSetGroupId = null "
                                    "AND PermissionSet.IsOwnedByProfile = false", sf_user_id)
    if section is not None and moving:
        for sobject in section.objects:
            queries[f"records:{sobject}"] = records_query(sobject, sf_user_id, section.open_filter(sobject))

    answers = dict(zip(queries, sf.query_many(list(queries.values())), strict=True))
    user_rows = answers["user"]
    if not user_rows:  # the stored link names a user that is gone (org refreshed): nothing to offboard here
        return OffboardingInputs(Leaver(entra_id, upn, state.status, None))
    user = user_rows[0]
    login = answers["login"][0] if answers["login"] else {}
    owners = {str(r["Username"]).lower(): Owner(str(r["Id"]), str(r["Username"]), bool(r.get("IsActive")))
              for r in answers.get("owners", [])}
    manager, source, note = _manager(user, owners, entra_manager_sf, manager_note)
    leaver = Leaver(entra_id, upn, state.status, sf_user_id, sf_active=bool(user.get("IsActive")),
                    sf_frozen=bool(login.get("IsFrozen")) if login else None, on_leave=on_leave,
                    manager=manager, manager_source=source, manager_note=note)

    groups = answers.get("groups", [])
    queue_rows = [g for g in groups if g.get("Type") == "Queue"]
    sobjects: dict[str, set[str]] = {}
    for row in answers.get("queue_objects", []):
        sobjects.setdefault(str(row["QueueId"]), set()).add(str(row["SobjectType"]))
    queues = {str(g["DeveloperName"]): Queue(str(g["Id"]), str(g["DeveloperName"]),
                                             frozenset(sobjects.get(str(g["Id"]), ()))) for g in queue_rows}
    public = {str(g["Id"]): str(g["DeveloperName"]) for g in groups if g.get("Type") == "Regular"}
    members = _members(sf, public, answers.get("members", []))

    records: dict[str, list[OpenRecord]] = {}
    if section is not None and moving:
        for sobject in section.objects:
            label = label_field(sobject)
            records[sobject] = [OpenRecord(str(r["Id"]), sobject, str(r["OwnerId"]), str(r.get(label) or ""))
                                for r in answers[f"records:{sobject}"]]
    licences = _licences(answers, grants, entra_id) if "psl" in answers else ()
    directory = OwnerDirectory(users=owners, queues=queues, groups=members)
    return OffboardingInputs(leaver, records, directory, licences)


def _entra_manager(graph: Any, links: Any, entra_id: str, state: EntraState) -> tuple[str | None, str | None]:
    """The Entra manager's Salesforce user id through idsync's link, or why there is none. A deleted user has no
    manager in Graph any more (only Salesforce's ManagerId can help then)."""
    if state.status != DISABLED:
        return None, "the leaver is deleted in Entra, so Entra no longer says who their manager was"
    try:
        body = graph.request("GET", f"users/{quote(entra_id, safe='')}/manager",
                             params={"$select": "id,userPrincipalName"}).json()
    except NotFound:
        return None, "the leaver has no manager in Salesforce (ManagerId) or Entra"
    manager_id = str(body.get("id") or "")
    link = links.get_link(manager_id) if manager_id else None
    if link is None or not link.sf_user_id:
        who = body.get("userPrincipalName") or manager_id
        return None, f"the Entra manager {who} is not linked to a Salesforce user"
    return str(link.sf_user_id), None


def _manager(user: dict[str, Any], owners: dict[str, Owner], entra_manager_sf: str | None,
             entra_note: str | None) -> tuple[Owner | None, str | None, str | None]:
    """Salesforce's ManagerId first, then the Entra manager; the first active one wins (else the first found, so
    the plan can say it is inactive)."""
    found: list[tuple[Owner, str]] = []
    manager = user.get("Manager") if isinstance(user.get("Manager"), dict) else None
    if user.get("ManagerId") and manager is not None:
        found.append((Owner(str(user["ManagerId"]), str(manager.get("Username") or user["ManagerId"]),
                            bool(manager.get("IsActive"))), "Salesforce ManagerId"))
    if entra_manager_sf:
        by_id = {o.id: o for o in owners.values()}
        owner = by_id.get(entra_manager_sf)
        if owner is not None and all(o.id != owner.id for o, _ in found):
            found.append((owner, "Entra manager"))
    for owner, source in found:
        if owner.active:
            return owner, source, None
    if found:
        return found[0][0], found[0][1], None
    return None, None, entra_note


def _members(sf: QueryApi, public: dict[str, str], rows: Sequence[dict[str, Any]]) -> dict[str, tuple[Owner, ...]]:
    """Public group -> its user members with IsActive (a second query: the member field is polymorphic)."""
    by_group: dict[str, list[str]] = {name: [] for name in public.values()}
    for row in rows:
        name = public.get(str(row.get("GroupId")))
        member = str(row.get("UserOrGroupId") or "")
        if name is not None and member.startswith("005"):
            by_group[name].append(member)
    ids = sorted({m for members in by_group.values() for m in members})
    users: dict[str, Owner] = {}
    if ids:
        [rows_found] = sf.query_many([format_soql("SELECT Id, Username, IsActive FROM User WHERE Id IN {}", ids)])
        users = {str(r["Id"]): Owner(str(r["Id"]), str(r["Username"]), bool(r.get("IsActive"))) for r in rows_found}
    return {name: tuple(sorted((users[m] for m in members if m in users), key=lambda o: o.id))
            for name, members in by_group.items()}


def _licences(answers: dict[str, list[dict[str, Any]]], grants: Any, entra_id: str) -> tuple[HeldLicence, ...]:
    granted = grants.of([entra_id]).get(entra_id, frozenset()) if grants is not None else frozenset()
    held: list[HeldLicence] = []
    for row in answers.get("psl", []):
        licence = row.get("PermissionSetLicense") or {}
        name = str(licence.get("DeveloperName") or row["PermissionSetLicenseId"])
        held.append(HeldLicence("psl", name, str(row["PermissionSetLicenseId"]), str(row["Id"]),
                                granted=f"psl:{name}" in granted))
    for row in answers.get("ps", []):
        perm = row.get("PermissionSet") or {}
        name = str(perm.get("Name") or row["PermissionSetId"])
        needs = str(perm.get("LicenseId") or "") or None
        held.append(HeldLicence("ps", name, str(row["PermissionSetId"]), str(row["Id"]), needs=needs,
                                granted=f"ps:{name}" in granted))
    return tuple(held)
