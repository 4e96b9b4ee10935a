"""Why Salesforce refuses to deactivate a user, in plain words, with where in Setup an admin removes the cause.

Salesforce refuses `IsActive = false` while org configuration still points at the user: the default lead or case
owner, the Web-to-Lead default creator, the Automated Case User, the Default Workflow User, a user named in an
assignment rule, an approval process, an auto-response rule or a workflow email alert, a custom hierarchy field, or
the last active System Administrator (https://help.salesforce.com/s/articleView?id=sf.users_deactivate.htm). The API
answers FIELD_INTEGRITY_EXCEPTION (CANNOT_DISABLE_LAST_ADMIN for the last admin) with the same sentence the Setup
page shows, so the message is what tells the causes apart. The user stays frozen (cannot log in) meanwhile; idsync
retries the deactivation on a schedule and at once after `idsync review resolve ID --retry`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Blocker:
    kind: str  # stable key, e.g. default_lead_owner
    plain: str  # what is wrong, for a person
    fix: str  # where in Setup it is fixed

    def describe(self) -> str:
        return f"{self.plain}. Fix: {self.fix}."


#: (words found in Salesforce's message, lower-cased) -> the blocker. First match wins, so specific before general.
_KNOWN: tuple[tuple[tuple[str, ...], Blocker], ...] = (
    (("default owner of leads", "default lead owner"), Blocker(
        "default_lead_owner", "the user is the default owner of new leads",
        "Setup > Lead Settings > Default Lead Owner: choose another user or a queue")),
    (("default owner of cases", "default case owner"), Blocker(
        "default_case_owner", "the user is the default owner of new cases",
        "Setup > Support Settings > Default Case Owner: choose another user or a queue")),
    (("default workflow user",), Blocker(
        "default_workflow_user", "the user is the Default Workflow User (workflow and flow actions run as them)",
        "Setup > Process Automation Settings > Default Workflow User: choose another active user")),
    (("web to lead", "web-to-lead"), Blocker(
        "web_to_lead_creator", "the user is the Web-to-Lead default creator",
        "Setup > Web-to-Lead > Default Lead Creator: choose another active user")),
    (("automated case user",), Blocker(
        "automated_case_user", "the user is the Automated Case User (case comments and Web-to-Case run as them)",
        "Setup > Support Settings > Automated Case User: choose another active user")),
    (("approver",), Blocker(
        "approver", "the user is an approver or delegated approver in an approval process",
        "Setup > Approval Processes: replace the user in each step naming them, and clear Delegated Approver on "
        "users who delegate to them")),
    (("lead assignment rule",), Blocker(
        "lead_assignment_rule", "a lead assignment rule assigns leads to the user",
        "Setup > Lead Assignment Rules: change the rule entries that name the user")),
    (("case assignment rule",), Blocker(
        "case_assignment_rule", "a case assignment rule assigns cases to the user",
        "Setup > Case Assignment Rules: change the rule entries that name the user")),
    (("auto-response", "autoresponse"), Blocker(
        "auto_response_sender", "the user is the sender of an auto-response rule",
        "Setup > Lead (or Case) Auto-Response Rules: change the sender in the rule entries")),
    (("email alert",), Blocker(
        "workflow_email_recipient", "the user is the only recipient of a workflow email alert",
        "Setup > Email Alerts: remove the user from the recipients (or add another recipient)")),
    (("hierarch",), Blocker(
        "hierarchy_field", "a custom hierarchy field on another user points at the user",
        "Setup > Object Manager > User > Fields: find the hierarchy field and clear it on the users who name "
        "this user")),
    (("last active system administrator", "last admin"), Blocker(
        "last_admin", "the user is the last active System Administrator",
        "Setup > Users: give another active user the System Administrator profile first")),
)

#: Salesforce error codes that mean "this user cannot be deactivated until someone changes org data".
DEACTIVATION_BLOCKER_CODES = frozenset({"FIELD_INTEGRITY_EXCEPTION", "CANNOT_DISABLE_LAST_ADMIN"})


def describe_blocker(code: str | None, message: str | None) -> Blocker:
    """The blocker behind Salesforce's answer; an unrecognised one still names Salesforce's own words."""
    text = (message or "").lower()
    if code == "CANNOT_DISABLE_LAST_ADMIN":
        return _KNOWN[-1][1]
    for words, blocker in _KNOWN:
        if any(word in text for word in words):
            return blocker
    return Blocker("other", f"Salesforce refuses to deactivate the user: {message or code}",
                   "Setup > Users > the user > Edit > untick Active: Salesforce names what still refers to the user")
