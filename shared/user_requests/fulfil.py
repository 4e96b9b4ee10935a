"""Carrying out one approved request: an Entra member (or a B2B invitation), its groups and manager, and the
answer written back to Salesforce.

Exactly once, with the request Id as the key:
- the request is read again first: Completed (or Failed, Rejected) means a duplicate message, nothing is done;
- Approved becomes In Progress before Graph is touched, so the poller stops offering it; In Progress found later
  means an earlier attempt stopped mid-way, and this one continues;
- the member user carries the request Id in an extension attribute (`requests.mark_attribute`): before creating,
  the deterministic UPN candidates are looked up, and a user marked with this request is the one an earlier attempt
  created (its response may have been lost); a taken UPN without the mark moves on to the next candidate;
- group membership ("already exist") and the manager are idempotent; the write-back is a plain update.

Failures a person must fix (an unknown or not-allowed group, a taken UPN asked for by name, a 4xx from Graph)
set Status__c Failed with a readable Error__c and open a Task for the requester; throttling and outages raise and
the task retries (Graph 429 on an invitation is retried after its Retry-After, then succeeds).
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from simple_salesforce.format import format_soql

from shared.audit import audit
from shared.errors import NotFound, PermanentError
from shared.identity_links import IdentityLinks
from shared.logging import get_logger
from shared.mapping.model import Mapping
from shared.mapping.user_requests import RequestsSpec
from shared.user_requests.progress import RequestProgress
from shared.user_requests.record import (
    ACTIONABLE,
    APPROVED,
    COMPLETED,
    FAILED,
    FIELDS,
    IN_PROGRESS,
    INVITE,
    OBJECT,
    ProvisioningRequest,
    is_object_id,
)
from shared.user_requests.upn import mail_nickname, upn_candidates

log = get_logger("idsync.requests")

#: What a Task idsync opens for a requester starts with (and how a retry finds the one it already opened).
TASK_PREFIX = "idsync:"
#: Graph's canonical form of a directory object reference in `members/$ref` bodies.
DIRECTORY_OBJECT = "https://graph.microsoft.com/v1.0/directoryObjects/{id}"
_TAKEN = "already exists"
_domains: dict[int, tuple[float, str]] = {}
DOMAIN_TTL_S = 600.0


class RequestFailed(Exception):  # noqa: N818 - the request's outcome, carried to the write-back
    """The request cannot be carried out until a person changes it; the message goes to Error__c."""


@dataclass
class RequestDeps:
    graph: Any
    salesforce: Any
    redis: Any
    mapping: Mapping
    lock_ttl_s: float = 330.0


def fulfil_request(deps: RequestDeps, request_id: str, *, correlation_id: str | None = None,
                   source_event: str | None = None) -> str:
    """The outcome: completed, failed, already_completed, not_actionable, request_gone, requests_disabled.
    Raises `RequestBusy` when another worker holds the request, and retryable errors for the task to retry."""
    spec = deps.mapping.requests
    if spec is None or not spec.enabled:
        return "requests_disabled"
    progress = RequestProgress(deps.redis)
    with progress.lock(request_id, deps.lock_ttl_s):
        record = _read(deps.salesforce, request_id)
        if record is None:
            return "request_gone"
        request = ProvisioningRequest.from_record(record)
        if request.status == COMPLETED:
            return "already_completed"
        if request.status not in ACTIONABLE:
            return "not_actionable"
        if request.status == APPROVED:
            deps.salesforce.update_record(OBJECT, request.id, {"Status__c": IN_PROGRESS})
        try:
            user = _carry_out(deps, spec, request, progress)
        except RequestFailed as failed:
            _fail(deps, request, str(failed), correlation_id, source_event)
            return "failed"
        _complete(deps, request, user, correlation_id, source_event)
        return "completed"


def _read(sf: Any, request_id: str) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = sf.query_all(format_soql(f"SELECT {', '.join(FIELDS)} FROM {OBJECT} WHERE Id = {{}}",
                                                          request_id))
    return rows[0] if rows else None


# ------------------------------------------------------------------------------------------------------ Graph


def _carry_out(deps: RequestDeps, spec: RequestsSpec, request: ProvisioningRequest,
               progress: RequestProgress) -> dict[str, Any]:
    problems = request.problems()
    if problems:
        raise RequestFailed("; ".join(problems))
    groups = _resolve_groups(deps.graph, request.groups, spec.allowed_groups)
    manager_id = _resolve_manager(deps.graph, request.manager_upn) if request.type != INVITE else None
    if request.type == INVITE:
        user = _invite(deps.graph, spec, request)
    else:
        user = _create_member(deps.graph, spec, request, progress)
    progress.record(request.id, "user", entra_id=str(user["id"]), upn=str(user.get("userPrincipalName") or ""))
    for group_id, name in groups:
        _add_member(deps.graph, group_id, str(user["id"]), name)
    if manager_id:
        deps.graph.request("PUT", f"users/{quote(str(user['id']), safe='')}/manager/$ref",
                           json={"@odata.id": DIRECTORY_OBJECT.format(id=manager_id)})
    progress.record(request.id, "groups")
    return user


def _refused(what: str, err: PermanentError) -> RequestFailed:
    status = f"{err.status} " if err.status else ""
    code = f"{err.code}: " if err.code else ""
    return RequestFailed(f"Entra refused {what}: {status}{code}{err.message}")


def _resolve_groups(graph: Any, names: tuple[str, ...], allowed: list[str]) -> list[tuple[str, str]]:
    """(object id, display name) per requested group; unknown, ambiguous or not allowed -> RequestFailed."""
    if not names:
        return []
    by_id = [n for n in names if is_object_id(n)]
    by_name = [n for n in names if not is_object_id(n)]
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if by_id:
        groups = graph.groups_by_ids(by_id)
        for gid in by_id:
            if gid in groups:
                found[gid] = groups[gid]
            else:
                problems.append(f"unknown Entra group '{gid}'")
    if by_name:
        for name, groups in graph.groups_by_name(by_name).items():
            if not groups:
                problems.append(f"unknown Entra group '{name}'")
            elif len(groups) > 1:
                problems.append(f"{len(groups)} Entra groups are named '{name}' (name it by object id)")
            else:
                found[name] = groups[0]
    if problems:
        raise RequestFailed("; ".join(problems) + " (Entra_Groups__c)")
    permitted = {a.casefold() for a in allowed}
    refused = [n for n, g in found.items()
               if str(g.get("id", "")).casefold() not in permitted
               and str(g.get("displayName", "")).casefold() not in permitted]
    if refused:
        listed = ", ".join(f"'{n}'" for n in refused)
        raise RequestFailed(f"Entra group {listed} may not be requested (not in requests.allowed_groups)")
    return [(str(g["id"]), str(g.get("displayName") or n)) for n, g in found.items()]


def _resolve_manager(graph: Any, manager_upn: str | None) -> str | None:
    if not manager_upn:
        return None
    user = graph.get_user(manager_upn, select=["id"])
    if user is None:
        raise RequestFailed(f"unknown manager '{manager_upn}' (Manager_UPN__c)")
    return str(user["id"])


def _domain(graph: Any, spec: RequestsSpec) -> str:
    if spec.upn_domain:
        return spec.upn_domain
    cached = _domains.get(id(graph))
    if cached is not None and time.monotonic() - cached[0] < DOMAIN_TTL_S:
        return cached[1]
    orgs = graph.request("GET", "organization", params={"$select": "verifiedDomains"}).json().get("value", [])
    domains = [d for org in orgs for d in org.get("verifiedDomains", []) if isinstance(d, dict)]
    default = next((d["name"] for d in domains if d.get("isDefault")), None) or next(
        (d["name"] for d in domains if d.get("name")), None)
    if not default:
        raise RequestFailed("the tenant reports no verified domain (set requests.upn_domain)")
    _domains[id(graph)] = (time.monotonic(), str(default))
    return str(default)


def _ours(user: dict[str, Any], spec: RequestsSpec, request_id: str) -> bool:
    marks = user.get("onPremisesExtensionAttributes") or {}
    return isinstance(marks, dict) and marks.get(spec.mark_attribute) == request_id


def _password(length: int) -> str:
    """Random, with every character class Entra's complexity rule asks for; never logged or stored by idsync."""
    alphabet = string.ascii_letters + string.digits + "!#%+-=?@_"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in candidate) and any(c.isupper() for c in candidate)
                and any(c.isdigit() for c in candidate) and any(not c.isalnum() for c in candidate)):
            return candidate


def _create_member(graph: Any, spec: RequestsSpec, request: ProvisioningRequest,
                   progress: RequestProgress) -> dict[str, Any]:
    select = ["id", "userPrincipalName", "onPremisesExtensionAttributes"]
    earlier = progress.get(request.id)
    if earlier.entra_id:
        found = graph.get_user(earlier.entra_id, select=select)
        if found is not None and _ours(found, spec, request.id):
            return dict(found)
    explicit = request.requested_upn is not None
    if explicit:
        candidates = [str(request.requested_upn)]
    else:
        candidates = upn_candidates(request.first_name, request.last_name, spec.upn_format, _domain(graph, spec),
                                    spec.max_upn_attempts)
        if not candidates:
            raise RequestFailed("First_Name__c and Last_Name__c give no usable UPN (only characters Entra refuses)")
    for upn in candidates:
        existing = graph.get_user(upn, select=select)
        if existing is not None:
            if _ours(existing, spec, request.id):
                return dict(existing)
            if explicit:
                raise RequestFailed(f"the UPN {upn} is taken in Entra (Requested_For__c)")
            continue
        progress.record(request.id, "creating", upn=upn)
        body = _member_body(spec, request, upn)
        try:
            created: dict[str, Any] = graph.request("POST", "users", json=body).json()
        except PermanentError as err:
            if _TAKEN in err.message and "userPrincipalName" in err.message:
                if explicit:
                    raise RequestFailed(f"the UPN {upn} is taken in Entra (Requested_For__c)") from None
                continue  # taken between our look-up and the create: the next candidate
            raise _refused(f"the new user {upn}", err) from None
        log.info("request_user_created", request_id=request.id, entra_id=created.get("id"), upn=upn)
        return created
    raise RequestFailed(f"the UPN is taken in Entra: {candidates[0]} and the next {len(candidates) - 1} numbered "
                        f"ones are in use (requests.max_upn_attempts)")


def _member_body(spec: RequestsSpec, request: ProvisioningRequest, upn: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountEnabled": True,
        "displayName": request.display_name,
        "mailNickname": mail_nickname(upn),
        "userPrincipalName": upn,
        "passwordProfile": {"password": _password(spec.password.length),
                            "forceChangePasswordNextSignIn": spec.password.force_change},
        "onPremisesExtensionAttributes": {spec.mark_attribute: request.id},
    }
    optional = {"givenName": request.first_name, "surname": request.last_name, "department": request.department,
                "jobTitle": request.job_title, "usageLocation": spec.usage_location,
                "otherMails": [request.email] if request.email else None}
    body.update({k: v for k, v in optional.items() if v})
    return body


def _invite(graph: Any, spec: RequestsSpec, request: ProvisioningRequest) -> dict[str, Any]:
    """A B2B invitation; Graph answers a repeated invitation of the same address with the same guest, so a retry
    after a lost response does not create a second one."""
    body = {"invitedUserEmailAddress": request.email, "inviteRedirectUrl": spec.invite_redirect_url,
            "invitedUserDisplayName": request.display_name, "sendInvitationMessage": spec.send_invitation_message}
    try:
        invitation = graph.request("POST", "invitations", json=body).json()
    except PermanentError as err:
        raise _refused(f"the invitation of {request.email}", err) from None
    user_id = str((invitation.get("invitedUser") or {}).get("id") or "")
    if not user_id:
        raise RequestFailed("Entra answered the invitation without the invited user")
    patch = {k: v for k, v in {"givenName": request.first_name, "surname": request.last_name,
                               "department": request.department, "jobTitle": request.job_title}.items() if v}
    if patch:
        try:
            graph.patch_user(user_id, patch)
        except PermanentError as err:
            log.warning("request_guest_patch_refused", request_id=request.id, error=str(err))
    user = graph.get_user(user_id, select=["id", "userPrincipalName"])
    return dict(user) if user else {"id": user_id}


def _add_member(graph: Any, group_id: str, user_id: str, name: str) -> None:
    try:
        graph.request("POST", f"groups/{quote(group_id, safe='')}/members/$ref",
                      json={"@odata.id": DIRECTORY_OBJECT.format(id=user_id)})
    except NotFound:
        raise RequestFailed(f"the Entra group '{name}' disappeared while the request was carried out") from None
    except PermanentError as err:
        if "already exist" in err.message:
            return  # a retry after the member was added: done
        raise _refused(f"adding the user to '{name}'", err) from None


# ------------------------------------------------------------------------------------------------------ Salesforce


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _complete(deps: RequestDeps, request: ProvisioningRequest, user: dict[str, Any], correlation_id: str | None,
              source_event: str | None) -> None:
    entra_id = str(user["id"])
    upn = str(user.get("userPrincipalName") or "") or None
    if request.target_user:
        # The requester named the Salesforce user this account is for: idsync's link makes provisioning update
        # that user rather than create a second one, whatever the matching rules say.
        IdentityLinks(deps.redis).set_link(entra_id, request.target_user, upn)
    fields: dict[str, Any] = {"Status__c": COMPLETED, "Entra_Id__c": entra_id, "Completed_At__c": _now(),
                              "Error__c": None}
    if upn and request.type != INVITE:
        fields["Requested_For__c"] = upn
    try:
        deps.salesforce.update_record(OBJECT, request.id, fields)
    except PermanentError as err:
        # e.g. another request already carries this Entra user (Entra_Id__c is unique): the account exists, but
        # this request cannot say so; a person looks at both.
        _fail(deps, request, f"the Entra account {upn or entra_id} exists, but Salesforce refused the "
              f"write-back: {err.code or ''} {err.message}".strip(), correlation_id, source_event)
        return
    RequestProgress(deps.redis).record(request.id, "completed", entra_id=entra_id, upn=upn)
    audit(deps.redis, "reverse_flow_create", entra_id, None, "completed", correlation_id, upn=upn,
          source_event=source_event, rule=f"request {request.name} ({request.type})", request_id=request.id,
          after={"Status__c": COMPLETED, "Entra_Id__c": entra_id})


def _fail(deps: RequestDeps, request: ProvisioningRequest, message: str, correlation_id: str | None,
          source_event: str | None) -> None:
    sf = deps.salesforce
    task_id = _ensure_task(sf, request, message)
    sf.update_record(OBJECT, request.id, {"Status__c": FAILED, "Error__c": message[:32000]})
    RequestProgress(deps.redis).record(request.id, "failed")
    audit(deps.redis, "reverse_flow_create", request.entra_id, None, "failed", correlation_id,
          source_event=source_event, rule=f"request {request.name} ({request.type})", request_id=request.id,
          reason=message, task_id=task_id)
    log.warning("request_failed", request_id=request.id, reason=message)


def _ensure_task(sf: Any, request: ProvisioningRequest, message: str) -> str | None:
    """One open Task per failed request for the person who raised it; a retry finds the one it already opened
    (a request approved again and failing again after its Task was closed gets a new one)."""
    if not request.created_by:
        return None
    existing = sf.query_all(format_soql("SELECT Id FROM Task WHERE WhatId = {} AND Subject LIKE {} AND IsClosed = "
                                        "false", request.id, f"{TASK_PREFIX}%"))
    if existing:
        return str(existing[0]["Id"])
    task = {"attributes": {"type": "Task"}, "Subject": f"{TASK_PREFIX} user request {request.name} failed"[:255],
            "OwnerId": request.created_by, "WhatId": request.id, "Priority": "High", "Status": "Not Started",
            "Description": f"{message}\n\nFix the request and set its Status to Approved again."[:32000]}
    results = sf.create_records([task])
    result = results[0] if results else {}
    if not result.get("success"):
        log.warning("request_task_refused", request_id=request.id, errors=result.get("errors"))
        return None
    return str(result.get("id"))
