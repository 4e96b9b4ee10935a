"""`POST /invitations`: B2B guest invitations (https://learn.microsoft.com/graph/api/invitation-post).

The guest user exists immediately - `userType Guest`, `creationType Invitation`, `externalUserState
PendingAcceptance`, a `#EXT#` UPN in the tenant's initial domain - because that is what the product's provisioning
sees in delta before anyone redeems anything. Redemption has no Graph API; `Directory.accept_invitation` is the
control hook the admin API exposes.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any
from urllib.parse import quote

from sandbox.graph.errors import bad_request
from sandbox.graph.routing import INVITE, GraphRequest, GraphResponse, Router
from sandbox.graph.users import context

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def guest_upn(email: str, tenant_domain: str) -> str:
    """`bob@contoso.com` -> `bob_contoso.com#EXT#@{tenant}.onmicrosoft.com`."""
    local, _, domain = email.partition("@")
    return f"{local}_{domain}#EXT#@{tenant_domain}"


def register(router: Router) -> None:
    @router.add("POST", "/invitations", INVITE)
    def invite(state: Any, req: GraphRequest) -> GraphResponse:
        body = req.body if isinstance(req.body, dict) else {}
        email = body.get("invitedUserEmailAddress")
        redirect = body.get("inviteRedirectUrl")
        if not isinstance(email, str) or not _EMAIL.match(email):
            raise bad_request("The invited user email address is invalid.", "BadRequest")
        if not isinstance(redirect, str) or not redirect:
            raise bad_request("The invite redirect URL is missing.", "BadRequest")
        user_type = body.get("invitedUserType") or "Guest"
        if user_type not in ("Guest", "Member"):
            raise bad_request("Invalid value specified for property 'invitedUserType'.", "BadRequest")
        d = state.directory
        now = state.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        with state.lock:
            upn = guest_upn(email, d.tenant_domain)
            existing = d.upn_index.get(upn.lower())
            if existing is not None:
                user = d.users[existing]
            else:
                local = email.partition("@")[0]
                user = d.create_user(
                    {
                        "accountEnabled": True,
                        "displayName": body.get("invitedUserDisplayName") or local,
                        "mailNickname": f"{local}_{email.partition('@')[2]}#EXT#".replace("@", "_"),
                        "userPrincipalName": upn,
                        "mail": email,
                        "otherMails": [email],
                        "userType": user_type,
                        "creationType": "Invitation",
                        "externalUserState": "PendingAcceptance",
                        "externalUserStateChangeDateTime": now,
                        "showInAddressList": False,
                    },
                    validate=False,
                )
        ticket = secrets.token_urlsafe(24)
        redeem = f"{state.base_url}/redeem?rd=" + quote(
            f"{state.base_url}/invitations/redeem/?tenant={state.creds.tenant_id}&user={user['id']}&ticket={ticket}",
            safe="",
        )
        out = {
            "@odata.context": context(state, "invitations/$entity"),
            "id": str(uuid.uuid4()),
            "inviteRedeemUrl": redeem,
            "invitedUserDisplayName": body.get("invitedUserDisplayName"),
            "invitedUserType": user_type,
            "invitedUserEmailAddress": email,
            "sendInvitationMessage": bool(body.get("sendInvitationMessage", False)),
            "resetRedemption": bool(body.get("resetRedemption", False)),
            "inviteRedirectUrl": redirect,
            "status": user.get("externalUserState") or "PendingAcceptance",
            "invitedUserMessageInfo": body.get("invitedUserMessageInfo")
            or {"messageLanguage": None, "ccRecipients": [], "customizedMessageBody": None},
            "invitedUser": {"id": user["id"]},
        }
        return GraphResponse(201, out)
