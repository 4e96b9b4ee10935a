"""`python -m sandbox.tenant`: act on a running sandbox as its admins would, through the public APIs.

    python -m sandbox.tenant list [--env-file var/sandbox.env]   # a guest's Salesforce side: its Contact's Account
    python -m sandbox.tenant disable [UPN]     # no UPN: an enabled member with a Salesforce user who owns open records
    python -m sandbox.tenant enable UPN        # and watch Salesforce: idsync reactivates users it deactivated
    python -m sandbox.tenant show UPN          # both sides: Entra state and groups; Salesforce profile, role,
                                               # permission sets, groups and queues, key fields, open records
                                               # (a B2B guest: the Contact, its Account and the fields idsync writes)
    python -m sandbox.tenant create-user GIVEN SURNAME --groups "All Employees,Sales Team West" [--title ...]
    python -m sandbox.tenant add-to-group UPN GROUP | remove-from-group UPN GROUP
    python -m sandbox.tenant set UPN jobTitle="Sales Manager" mobilePhone=     # empty value: cleared in Entra
    python -m sandbox.tenant set-manager UPN MANAGER_UPN
    python -m sandbox.tenant sf-assign UPN API_Only    # as a Salesforce admin, by hand: idsync leaves it alone
Every change goes through Graph; then the command watches Salesforce until idsync's change shows (`--wait`).
    python -m sandbox.tenant invite EMAIL [--name "Ana Lima"] [--group Distributors]
                                               # a B2B guest, via Graph; watch Salesforce for the Contact
    python -m sandbox.tenant accept EMAIL      # the guest redeems the invitation (Contact: Invitation_State__c)
    python -m sandbox.tenant request --first Ana --last Lima [--groups "All Employees;Marketing"] [--type Invite]
                                               # an Approved User_Provisioning_Request__c, via the Salesforce API;
                                               # watch it complete and the Salesforce user appear

It is how a person tries a leaver without writing code; changes go through Graph, so idsync sees them exactly as it
would see a real admin's. Exit codes: 0 done; 2 bad input (a malformed argument; an unknown user, group, guest or
permission set; a request Graph or Salesforce refuses with a 4xx, e.g. a user who exists already); 1 the sandbox
unreachable, a login refused, a 5xx, or a watched outcome that did not happen in time (`invite`, `accept`,
`request`). Every problem is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import requests
from simple_salesforce.exceptions import SalesforceError

from sandbox.admin_clients import GraphAdmin, OrgAdmin, read_env_file

#: how the hints name this tool: the venv's interpreter (a bare `python` outside it cannot import the sandbox)
TOOL = ".venv/bin/python -m sandbox.tenant"


class UsageError(Exception):
    """The command line asks for something malformed: reported as it is, before anything changes."""


def _is_guest(entra: dict[str, Any]) -> bool:
    """A B2B guest: idsync keeps a Contact (under an Account) for them in Salesforce, not a user."""
    return entra.get("userType") == "Guest"


def _account(contact: dict[str, Any]) -> str:
    return str((contact.get("Account") or {}).get("Name") or "no Account")


def _contact_line(contact: dict[str, Any] | None) -> str:
    if contact is None:
        return "no Contact yet in Salesforce"
    name = f"{contact.get('FirstName') or ''} {contact['LastName']}".strip()
    return f"Salesforce Contact {name} under Account '{_account(contact)}'"


def _contact_text(contact: dict[str, Any] | None) -> str:
    """`show`'s Salesforce side for a guest: the Contact and the fields the demo mapping writes."""
    if contact is None:
        return ("  Salesforce: no Contact yet (idsync makes one for a guest within seconds of the invitation; "
                "is idsync running? `make run`)")
    lines = [f"  Salesforce: Contact {contact['Id']}  account={_account(contact)}"]
    for name in ("Email", "Relationship__c", "Invitation_State__c", "Entra_Status__c"):
        lines.append(f"    {name:21} {contact.get(name) if contact.get(name) not in (None, '') else '-'}")
    return "\n".join(lines)


def _both_sides(org: OrgAdmin, entra: dict[str, Any], contact: dict[str, Any] | None, *, records: bool = False
                ) -> str:
    """One line: the Entra user (`entra`) and their Salesforce side, the user or, for a guest, the `contact`."""
    if _is_guest(entra):
        return (f"{entra['userPrincipalName']}: Entra accountEnabled={entra['accountEnabled']} (a guest); "
                f"{_contact_line(contact)}")
    sf = org.user(entra["userPrincipalName"])
    side = "not in Salesforce" if sf is None else (
        f"Salesforce IsActive={sf['IsActive']} IsFrozen={org.frozen(sf['Id'])}")
    line = f"{entra['userPrincipalName']}: Entra accountEnabled={entra['accountEnabled']}; {side}"
    if sf is None:
        return line
    owned = org.open_records(sf["Id"])
    line += f"; open records owned: {_count(owned)}"
    if records:
        for sobject, rows in owned.items():
            for row in rows:
                label = next((str(v) for k, v in row.items() if k not in ("attributes", "Id", "OwnerId")), "")
                line += f"\n  {sobject:12} {row['Id']}  {label}"
    return line


def _count(owned: dict[str, list[dict[str, object]]]) -> str:
    parts = [f"{len(rows)} {sobject}" for sobject, rows in owned.items() if rows]
    return ", ".join(parts) if parts else "none"


def _watch_records(org: OrgAdmin, upn: str, wait: float, before: dict[str, list[dict[str, object]]] | None) -> str:
    """After a disable: watch the open records the user owned before it (`before`) get new owners (idsync's
    ownership transfer; it may well be done by the time this first looks)."""
    started = time.monotonic()
    sf = org.user(upn)
    if sf is None:
        return ""
    if before is not None and not any(before.values()):
        return "no open records to re-own"
    owned = org.open_records(sf["Id"])
    while any(owned.values()) and time.monotonic() - started < wait:
        time.sleep(0.25)
        owned = org.open_records(sf["Id"])
    if not any(owned.values()):
        what = f" ({_count(before)})" if before else ""
        return (f"every open record re-owned{what} within {time.monotonic() - started:.2f} s of the deactivation "
                "(`idsync status`, `idsync review list`)")
    return (f"still owned after {wait:g} s: {_count(owned)} (no rule placed them? `idsync review list`; is idsync "
            "running? `make run`)")


def _watch(org: OrgAdmin, upn: str, *, active: bool, wait: float) -> str:
    """Watch Salesforce until the user's IsActive is `active` (idsync acting on the Graph change) or `wait` passes."""
    started = time.monotonic()
    sf = org.user(upn)
    if sf is None:
        return "not in Salesforce: nothing to watch"
    if sf["IsActive"] == active:
        return f"Salesforce user already {'active' if active else 'inactive'}"
    while sf is not None and sf["IsActive"] != active and time.monotonic() - started < wait:
        time.sleep(0.05)
        sf = org.user(upn)
    done = "reactivated" if active else "deactivated"
    if sf is not None and sf["IsActive"] == active:
        return f"Salesforce user {done} {time.monotonic() - started:.2f} s after the Graph call"
    state = "inactive (idsync reactivates only users it deactivated itself)" if active else "active"
    return f"Salesforce user still {state} after {wait:g} s (is idsync running? `make run`)"


def _view_text(view: dict[str, Any] | None) -> str:
    if view is None:
        return "  Salesforce: no user"
    lines = [f"  Salesforce: {'active' if view['IsActive'] else 'INACTIVE'}{', FROZEN' if view['IsFrozen'] else ''}"
             f"  profile={view['Profile']}  role={view['Role'] or '-'}"]
    for name in ("Title", "Department", "MobilePhone", "EmployeeNumber", "FederationIdentifier", "Manager"):
        lines.append(f"    {name:21} {view[name] if view[name] not in (None, '') else '-'}")
    lines.append(f"    {'PermissionSets':21} {', '.join(view['PermissionSets']) or '-'}")
    lines.append(f"    {'PermissionSetGroups':21} {', '.join(view['PermissionSetGroups']) or '-'}")
    lines.append(f"    {'Groups and queues':21} {', '.join(view['Groups']) or '-'}")
    return "\n".join(lines)


def _watch_change(org: OrgAdmin, username: str, before: dict[str, Any] | None, wait: float) -> str:
    """Poll Salesforce until this user's view differs from `before` (idsync applied the change) and settles."""
    started = time.monotonic()
    view = org.view(username)
    while view == before and time.monotonic() - started < wait:
        time.sleep(0.1)
        view = org.view(username)
    if view == before:
        return f"no change in Salesforce after {wait:g} s (is idsync running? `make run`)\n{_view_text(view)}"
    changed_after = time.monotonic() - started
    settled = org.view(username)
    while settled != view and time.monotonic() - started < wait:  # a plan lands in a few calls
        view = settled
        time.sleep(0.3)
        settled = org.view(username)
    return f"Salesforce changed {changed_after:.2f} s after the Graph call\n{_view_text(settled)}"


def _mover(args: argparse.Namespace, graph: GraphAdmin, org: OrgAdmin) -> int:
    """create-user, add-to-group, remove-from-group, set, set-manager: change Entra, then watch Salesforce."""
    if args.command == "create-user":
        upn = args.upn or f"{args.given}.{args.surname}@{graph.verified_domain()}".lower()
        attributes = {"jobTitle": args.title, "department": args.department, "mobilePhone": args.mobile,
                      "employeeId": args.employee_id, "usageLocation": args.usage_location}
        created = graph.create_user(args.given, args.surname, upn, **attributes)
        for group in [g.strip() for g in args.groups.split(",") if g.strip()]:
            graph.add_to_group(created["id"], group)
        if args.manager:
            graph.set_manager(created["id"], args.manager)
        print(f"created {upn} in Entra (id {created['id']}) in {args.groups or 'no groups'}; "
              f"watching Salesforce for up to {args.wait:g} s")
        print(_watch_change(org, upn, None, args.wait))
        return 0
    changes: dict[str, Any] = {}
    for pair in getattr(args, "changes", None) or ():  # `set`: checked before anything is asked of the sandbox
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"{pair!r} is not ATTRIBUTE=VALUE (an empty value clears it), e.g. jobTitle=\"Sales "
                             "Manager\" or mobilePhone=")
        changes[name] = value or None
    upn = graph.user(args.upn)["userPrincipalName"]
    before = org.view(upn)
    if args.command == "add-to-group":
        graph.add_to_group(upn, args.group)
        done = f"added {upn} to {args.group}"
    elif args.command == "remove-from-group":
        graph.remove_from_group(upn, args.group)
        done = f"removed {upn} from {args.group}"
    elif args.command == "set-manager":
        graph.set_manager(upn, args.manager)
        done = f"set the manager of {upn} to {args.manager}"
    else:
        graph.update(upn, changes)
        done = f"updated {upn}: " + ", ".join(f"{k}={v!r}" for k, v in changes.items())
    print(f"{done} in Entra (through Graph); watching Salesforce for up to {args.wait:g} s")
    print(_watch_change(org, upn, before, args.wait))
    return 0


def _poll(fetch: Callable[[], Any], wait: float) -> tuple[Any, float]:
    """`fetch()` until it returns something truthy or `wait` passes: (the last value, seconds it took)."""
    started = time.monotonic()
    value = fetch()
    while not value and time.monotonic() - started < wait:
        time.sleep(0.05)
        value = fetch()
    return value, time.monotonic() - started


def _guest_id(graph: GraphAdmin, email: str) -> str:
    found = graph.users(f"mail eq '{email}'", select="id,userPrincipalName,mail")
    if not found:
        raise LookupError(f"no guest with mail {email} in Entra — invite them first")
    return str(found[0]["id"])


def _invite(args: argparse.Namespace, graph: GraphAdmin, org: OrgAdmin) -> int:
    email = args.email.strip().lower()
    invitation = graph.invite(email, args.name)
    user_id = invitation["invitedUser"]["id"]
    if args.group:
        try:
            graph.add_member(graph.group(args.group)["id"], user_id)
        except LookupError:
            print(f"no Entra group {args.group!r}: invited without it", file=sys.stderr)
    print(f"invited {email} as a B2B guest in Entra (through Graph: POST /invitations, status "
          f"{invitation['status']}); watching Salesforce for up to {args.wait:g} s")

    def contact() -> dict[str, Any] | None:
        rows = org.contacts(email)
        return rows[0] if rows else None

    found, took = _poll(contact, args.wait)
    if not found:
        print(f"no Contact for {email} after {args.wait:g} s (is idsync running? `make run`)")
        return 1
    account = (found.get("Account") or {}).get("Name") or "no Account"
    print(f"Contact {found['FirstName'] or ''} {found['LastName']} under Account '{account}' "
          f"{took:.2f} s after the invitation (Relationship__c={found['Relationship__c']}, "
          f"Invitation_State__c={found['Invitation_State__c']})".replace("  ", " "))
    return 0


def _accept(args: argparse.Namespace, env: dict[str, str], graph: GraphAdmin, org: OrgAdmin) -> int:
    email = args.email.strip().lower()
    user_id = _guest_id(graph, email)
    with httpx.Client(verify=ssl.create_default_context(cafile=env["IDSYNC_CA_BUNDLE"]), trust_env=False,
                      timeout=30) as client:
        client.post(f"{env['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/graph/invitations/{user_id}/accept",
                    headers={"Authorization": f"Bearer {env['IDSYNC_SANDBOX_ADMIN_TOKEN']}"}).raise_for_status()
    print(f"{email} redeemed the invitation (externalUserState Accepted); watching Salesforce for up to "
          f"{args.wait:g} s")
    found, took = _poll(lambda: [c for c in org.contacts(email) if c["Invitation_State__c"] == "Accepted"],
                        args.wait)
    print(f"Contact updated {took:.2f} s later" if found else f"Contact not updated after {args.wait:g} s")
    return 0 if found else 1


def _request(args: argparse.Namespace, org: OrgAdmin) -> int:
    fields = {"Name": f"{args.type} {args.first or ''} {args.last}".replace("  ", " ")[:80],
              "Request_Type__c": args.type, "Status__c": "Approved", "First_Name__c": args.first,
              "Last_Name__c": args.last, "Email__c": args.email, "Department__c": args.department,
              "Job_Title__c": args.title, "Manager_UPN__c": args.manager, "Entra_Groups__c": args.groups}
    request_id = org.insert_request(**{k: v for k, v in fields.items() if v})
    print(f"inserted Approved request {request_id} in Salesforce (REST API); watching for up to {args.wait:g} s")
    started = time.monotonic()
    done, took = _poll(lambda: (r := org.request(request_id))["Status__c"] in ("Completed", "Failed") and r,
                       args.wait)
    if not done:
        print(f"request still {org.request(request_id)['Status__c']} after {args.wait:g} s (is idsync running with "
              f"requests enabled? `make run`)")
        return 1
    if done["Status__c"] == "Failed":
        print(f"request Failed after {took:.2f} s: {done['Error__c']}")
        return 1
    upn = done["Requested_For__c"]
    print(f"request Completed {took:.2f} s after insertion: Entra user {upn or done['Email__c']} "
          f"({done['Entra_Id__c']})")
    if args.type == "Invite" or not upn:
        return 0
    left = max(0.0, args.wait - (time.monotonic() - started))
    user, _took = _poll(lambda: org.user(upn.lower()), left)
    total = time.monotonic() - started
    if user:
        print(f"Salesforce user {user['Username']} provisioned {total:.2f} s after the request was inserted")
        return 0
    print(f"no Salesforce user {upn} yet after {args.wait:g} s (provisioning runs on the sync lane)")
    return 1


def _act(args: argparse.Namespace, env: dict[str, str]) -> int:
    graph, org = GraphAdmin(env), OrgAdmin(env)
    if args.command in ("create-user", "add-to-group", "remove-from-group", "set", "set-manager"):
        return _mover(args, graph, org)
    if args.command == "sf-assign":
        username = graph.user(args.upn)["userPrincipalName"]
        org.assign_permission_set(username, args.permission_set)
        print(f"assigned {args.permission_set} to {username} in Salesforce, by hand (not through idsync)")
        print(_view_text(org.view(username)))
        return 0
    if args.command == "invite":
        return _invite(args, graph, org)
    if args.command == "accept":
        return _accept(args, env, graph, org)
    if args.command == "request":
        return _request(args, org)
    if args.command == "list":
        users = graph.users(select="id,userPrincipalName,accountEnabled,userType,mail")
        contacts = org.guest_contacts({u["id"]: u.get("mail") for u in users if _is_guest(u)})
        for user in users:
            if _is_guest(user):  # its Salesforce side is a Contact: the Account it is under
                side = f"contact={_account(contacts[user['id']]) if user['id'] in contacts else '-'}"
            else:
                sf = org.user(user["userPrincipalName"])
                side = f"salesforce={'-' if sf is None else ('active' if sf['IsActive'] else 'inactive')}"
            print(f"{user['userPrincipalName']:60} entra={'enabled' if user['accountEnabled'] else 'disabled':8} "
                  f"{side}")
        return 0
    upn = args.upn
    if args.command == "disable" and not upn:
        members = graph.users("accountEnabled eq true and userType eq 'Member'")
        blockers = _blockers(env)
        active = {u["userPrincipalName"]: sf["Id"] for u in members
                  if (sf := org.user(u["userPrincipalName"])) and sf["IsActive"] and sf["Id"] not in blockers}
        owners = org.open_record_owners()
        upn = next((u for u, sf_id in active.items() if sf_id in owners), None) or next(iter(active), None)
        if upn is None:
            print("no enabled member with an active Salesforce user left", file=sys.stderr)
            return 1
    if args.command in ("disable", "enable"):
        graph.user(upn)  # an unknown user is reported as such before anything changes
        sf_before = org.user(upn) if args.command == "disable" else None
        owned_before = org.open_records(sf_before["Id"]) if sf_before is not None else None
        (graph.disable if args.command == "disable" else graph.enable)(upn)
        print(f"{args.command}d {upn} in Entra (through Graph); watching Salesforce for up to {args.wait:g} s")
        print(_watch(org, upn, active=args.command == "enable", wait=args.wait))
        if args.command == "disable" and args.wait > 0:  # the transfer follows the revocation: give it 30 s
            print(_watch_records(org, upn, wait=max(args.wait, 30.0), before=owned_before))
    entra = graph.user(upn)
    contact = org.guest_contact(entra["id"], entra.get("mail")) if _is_guest(entra) else None
    print(_both_sides(org, entra, contact, records=args.command == "show"))
    if args.command == "show":
        print(f"  Entra groups: {', '.join(graph.groups_of(upn)) or '-'}")
        print(_contact_text(contact) if _is_guest(entra) else _view_text(org.view(entra["userPrincipalName"])))
    return 0


def _blockers(env: dict[str, str]) -> dict[str, str]:
    """Users the org would refuse to deactivate (the sandbox's control API), so the demo leaver is a plain one."""
    response = httpx.get(f"{env['IDSYNC_SANDBOX_ADMIN_URL']}/_sandbox/salesforce/deactivation-blockers",
                         headers={"Authorization": f"Bearer {env['IDSYNC_SANDBOX_ADMIN_TOKEN']}"},
                         verify=ssl.create_default_context(cafile=env["IDSYNC_CA_BUNDLE"]), trust_env=False, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def _refusal(body: object) -> str | None:
    """`code: message` from an error body: Graph's and the control API's `{"error": {"code", "message"}}`,
    Salesforce's `[{"errorCode", "message"}]`, OAuth's `{"error", "error_description"}`; None: no such body."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code, message = body[0].get("errorCode"), body[0].get("message")
    elif isinstance(body, dict) and isinstance(body.get("error"), dict):
        code, message = body["error"].get("code"), body["error"].get("message")
    elif isinstance(body, dict) and isinstance(body.get("error"), str):
        code, message = body["error"], body.get("error_description")
    else:
        return None
    text = ": ".join(str(part) for part in (code, message) if part)
    return " ".join(text.split())[:300] or None


#: a Graph path naming one user: a 404 on it means that user does not exist
_USER_PATH = re.compile(r"^/v1\.0/users/([^/]+)$")


def _http_problem(err: httpx.HTTPStatusError) -> str:
    request, status = err.request, err.response.status_code
    raw_path = request.url.raw_path.decode("ascii").partition("?")[0]
    missing = _USER_PATH.match(raw_path)
    if status == 404 and missing:
        return f"no user {unquote(missing.group(1))} in Entra — `{TOOL} list` shows the users"
    path = unquote(raw_path)
    who = ("Graph" if path.startswith("/v1.0/") else "the sandbox's control API" if path.startswith("/_sandbox/")
           else "the sandbox")
    try:
        detail = _refusal(err.response.json())
    except ValueError:
        detail = None
    if detail is None:
        return f"{who} answered {status} to {request.method} {path} (with no error message)"
    return f"{who} refused {request.method} {path}: {detail}"


def _problem(err: Exception, args: argparse.Namespace, env: dict[str, str]) -> str | None:
    """One line for an expected failure (sandbox stopped, unknown user, a request refused, incomplete env file,
    a malformed argument); None: a bug. Only connection and login failures get a hint about the sandbox itself."""
    where = env.get("IDSYNC_SANDBOX_ADMIN_URL") or env.get("IDSYNC_GRAPH_URL") or args.env_file
    start = "`make run` (or `.venv/bin/python -m sandbox`) starts it"
    same = f"is the sandbox at {where} the one that wrote {args.env_file}?"
    if isinstance(err, UsageError):
        return str(err)
    if isinstance(err, httpx.HTTPStatusError):
        line = _http_problem(err)
        return f"{line} — {same}" if err.response.status_code in (401, 403) else line
    if isinstance(err, requests.HTTPError) and err.response is not None:  # the Salesforce token request
        detail = _refusal(err.response.content) or "no error message"
        return (f"Salesforce refused {err.request.method if err.request else 'POST'} "
                f"{urlsplit(err.response.url).path} ({err.response.status_code}): {detail} — {same}")
    if isinstance(err, httpx.TransportError | requests.RequestException):
        return f"cannot reach the sandbox at {where} ({type(err).__name__}) — is it running? {start}"
    if isinstance(err, OSError):  # e.g. the CA file named in the env file is gone with the sandbox's state
        return f"{' '.join(str(err).split())[:200]} — {start} again"
    if isinstance(err, SalesforceError):
        detail = _refusal(err.content) or "no error message"
        line = f"Salesforce refused {urlsplit(err.url).path} ({err.status}): {detail}"
        return f"{line} — {same}" if err.status in (401, 403) else line
    if _missing_setting(err):
        return f"{args.env_file} has no {err.args[0]} — it is written by the sandbox; {start} again"
    if _unknown_name(err):  # no such group, guest, permission set...: the message says which
        return str(err)
    if isinstance(err, RuntimeError | ValueError):  # msal: token refused or authority metadata unreachable
        return f"{' '.join(str(err).split())[:200]} — {same}"
    return None


def _missing_setting(err: Exception) -> bool:
    """A KeyError for a setting the env file lacks (any other KeyError is a bug, not the user's input)."""
    return isinstance(err, KeyError) and str(err.args[0] if err.args else "").startswith("IDSYNC_")


def _unknown_name(err: Exception) -> bool:
    """The LookupError the admin clients raise for a user, group, guest or permission set that does not exist; an
    IndexError or KeyError is a bug, not the user's input."""
    return isinstance(err, LookupError) and not isinstance(err, IndexError | KeyError)


#: 4xx answers that refuse no input of the user's: a login refused, throttling, a timeout
_NOT_THE_INPUT = frozenset({401, 403, 407, 408, 429})


def _exit_code(err: Exception) -> int:
    """The product CLI's convention: 2 is bad input (a malformed argument; an unknown user, group, guest or
    permission set; a 4xx refusal of what was asked, e.g. a user who exists already; an incomplete env file); 1 is
    the sandbox unreachable, a login refused, a 5xx, a transient refusal (429, a locked row). (A watched outcome that
    does not happen in time returns 1 from the command itself, not through here.)"""
    if isinstance(err, UsageError) or _missing_setting(err) or _unknown_name(err):
        return 2
    if isinstance(err, httpx.HTTPStatusError):
        status = err.response.status_code
        return 2 if 400 <= status < 500 and status not in _NOT_THE_INPUT else 1
    if isinstance(err, SalesforceError):
        transient = "UNABLE_TO_LOCK_ROW" in (_refusal(err.content) or "")
        return 2 if 400 <= err.status < 500 and err.status not in _NOT_THE_INPUT and not transient else 1
    return 1  # unreachable, the CA file gone, a token refused (msal or Salesforce's token endpoint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.tenant", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", default="var/sandbox.env", help="written by the sandbox (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="users on both sides (a guest's Salesforce side is its Contact)")
    for name, text in (("disable", "a leaver: disable an Entra user through Graph (no UPN: one who owns open "
                                   "Salesforce records), watch Salesforce deactivate them"),
                       ("enable", "re-enable an Entra user through Graph, watch Salesforce reactivate them"),
                       ("show", "one user on both sides: Entra state and groups, Salesforce access and open records "
                                "(a guest: the Contact)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("upn", nargs="?" if name == "disable" else None)
        if name != "show":
            cmd.add_argument("--wait", type=float, default=5.0, help="seconds to watch Salesforce (default: 5)")
    create = sub.add_parser("create-user", help="a joiner: a new Entra member, added to groups")
    create.add_argument("given")
    create.add_argument("surname")
    create.add_argument("--upn", help="default: given.surname@<the tenant's domain>")
    create.add_argument("--groups", default="All Employees", help="comma-separated display names")
    create.add_argument("--title")
    create.add_argument("--department")
    create.add_argument("--mobile")
    create.add_argument("--employee-id")
    create.add_argument("--usage-location", default="US")
    create.add_argument("--manager", help="the manager's UPN")
    for name, text in (("add-to-group", "a mover: add an Entra user to a group, watch Salesforce follow"),
                       ("remove-from-group", "a mover (or, from the scope group, a leaver): remove an Entra user "
                                             "from a group, watch Salesforce follow")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("upn")
        cmd.add_argument("group", help="the group's display name")
    setter = sub.add_parser("set", help="change Entra attributes: jobTitle=... department=... mobilePhone=")
    setter.add_argument("upn")
    setter.add_argument("changes", nargs="+", metavar="ATTRIBUTE=VALUE")
    manager = sub.add_parser("set-manager", help="set an Entra user's manager, watch Salesforce's ManagerId follow")
    manager.add_argument("upn")
    manager.add_argument("manager", help="the manager's UPN")
    assign = sub.add_parser("sf-assign", help="assign a permission set in Salesforce by hand, as an admin would")
    assign.add_argument("upn")
    assign.add_argument("permission_set", help="the permission set's API name, e.g. API_Only")
    for cmd in (create, setter, manager, sub.choices["add-to-group"], sub.choices["remove-from-group"]):
        cmd.add_argument("--wait", type=float, default=10.0, help="seconds to watch Salesforce (default: 10)")


    invite = sub.add_parser("invite", help="invite a B2B guest through Graph, watch Salesforce for the Contact")
    invite.add_argument("email")
    invite.add_argument("--name", help="display name (default: the address's local part)")
    invite.add_argument("--group", help="an Entra group to add the guest to (e.g. Distributors)")
    invite.add_argument("--wait", type=float, default=10.0, help="seconds to watch Salesforce (default: 10)")
    accept = sub.add_parser("accept", help="the guest redeems the invitation")
    accept.add_argument("email")
    accept.add_argument("--wait", type=float, default=10.0)
    request = sub.add_parser("request", help="insert an Approved User_Provisioning_Request__c, watch it complete")
    request.add_argument("--first", help="First_Name__c")
    request.add_argument("--last", required=True, help="Last_Name__c")
    request.add_argument("--type", choices=["Create", "Invite"], default="Create", help="Request_Type__c")
    request.add_argument("--email", help="Email__c (required for Invite)")
    request.add_argument("--groups", default="All Employees", help="Entra_Groups__c, ';'-separated "
                         "(default: All Employees, the demo mapping's scope)")
    request.add_argument("--department")
    request.add_argument("--title")
    request.add_argument("--manager", help="Manager_UPN__c")
    request.add_argument("--wait", type=float, default=30.0, help="seconds to watch (default: 30)")
    args = parser.parse_args(argv)
    try:
        env = read_env_file(args.env_file)
    except OSError as err:
        print(f"cannot read {args.env_file}: {err.strerror} (is the sandbox running? `make run` starts it)",
              file=sys.stderr)
        return 2
    try:
        return _act(args, env)
    except Exception as err:  # noqa: BLE001 - a person at a terminal gets one line, not a traceback
        line = _problem(err, args, env)
        if line is None:
            raise
        print(f"sandbox.tenant: {line}", file=sys.stderr)
        return _exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
