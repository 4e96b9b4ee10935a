"""Salesforce's write rules, with the error codes and messages a real org gives
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm and the User object's
reference).

Where Salesforce's exact API error code is unverified the sandbox picks one and documents it here, because the
product classifies errors by `errorCode`:
- Username not email-shaped: FIELD_INTEGRITY_EXCEPTION "Username must be in the form of an email address
  (for example, john@acme.com)".
- Deleting a User: 400 DELETE_FAILED "Cannot delete a user. ..."; deleting other non-deletable objects (Profile,
  UserLicense, UserLogin, PermissionSetLicense): 400 INVALID_TYPE_FOR_OPERATION "entity type cannot be deleted".
- Deactivation blockers: FIELD_INTEGRITY_EXCEPTION with the UI wording (`DEACTIVATION_BLOCKERS`).
- Duplicate FederationIdentifier: DUPLICATE_VALUE "This Federation ID is already in use. Use a different Federation
  ID."; duplicate CommunityNickname: DUPLICATE_COMM_NICKNAME.
- Assigning or deleting a profile-owned permission set assignment: FIELD_INTEGRITY_EXCEPTION "You can't assign or
  unassign this permission set because it's associated with a profile."
- A queue as owner of an object queues can't own (Account, Opportunity, Contact, Task): FIELD_INTEGRITY_EXCEPTION
  "Owner ID: id value of incorrect type: 00G..."; a queue without a QueueSobject row for the object:
  INVALID_CROSS_REFERENCE_KEY.
- Assigning an inactive owner: INACTIVE_OWNER_OR_USER for every ownable object unless
  `salesforce.allow_inactive_owner_assignment` (the org setting "Update Records with Inactive Owners"); editing a
  Contact or Task whose owner is inactive fails the same way even with the setting.
- Validation rules (`salesforce.validation_rules`, {object, field, pattern|blank, message} or "Object.Field=Value"):
  a save leaving that value fails with
  FIELD_CUSTOM_VALIDATION_EXCEPTION and the rule's message, as an org's own validation rule does.
- The `record_lock_rate` fault: an update of a CRM record fails alone with UNABLE_TO_LOCK_ROW "unable to obtain
  exclusive access to this record" (another transaction holds the row), so collections and bulk jobs see per-record
  lock errors among successes.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sandbox.salesforce.api import SalesforceApiError
from sandbox.salesforce.org import normalize_id
from sandbox.salesforce.schema import FieldInfo, ObjectDef

if TYPE_CHECKING:
    from sandbox.salesforce.org import Org

_lock_rng = random.Random()
_EMAIL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

DUPLICATE_USERNAME_MESSAGE = (
    "Duplicate Username.<br>The username already exists in this or another Salesforce organization. Usernames must "
    "be unique across all Salesforce organizations. To resolve, use a different username (it doesn't need to match "
    "the user's email address). "
)
PROFILE_PSA_MESSAGE = "You can't assign or unassign this permission set because it's associated with a profile."

#: reason key -> the message Salesforce shows when deactivating such a user (help articles 000384586/000384761)
DEACTIVATION_BLOCKERS: dict[str, str] = {
    "default_lead_owner": "You cannot deactivate a user who is the default owner of leads",
    "default_case_owner": "You cannot deactivate a user who is the default owner of cases",
    "default_workflow_user": "You cannot deactivate the Default Workflow User",
    "web_to_lead_creator": "You cannot disable the Web to Lead Default Creator",
    "automated_case_user": "You cannot deactivate the Automated Case User",
    "approver": "This user is an approver or delegated approver in an approval process and can't be deactivated",
    "lead_assignment_rule": "You cannot deactivate this user because they are used in a lead assignment rule",
    "case_assignment_rule": "You cannot deactivate this user because they are used in a case assignment rule",
    "workflow_email_recipient": "You cannot deactivate this user because they are the sole recipient of a workflow "
    "email alert",
}
_REASON_ALIASES = {
    "default lead owner": "default_lead_owner",
    "default case owner": "default_case_owner",
    "default workflow user": "default_workflow_user",
    "web-to-lead default creator": "web_to_lead_creator",
    "automated case user": "automated_case_user",
}

#: objects whose records need an active owner even after Spring '15 (NPSP notes)
_ACTIVE_OWNER_REQUIRED = {"Contact", "Task"}
_OPP_CLOSED = {"Closed Won", "Closed Lost"}
_STAGE_PROBABILITY = {
    "Prospecting": 10, "Qualification": 10, "Needs Analysis": 20, "Value Proposition": 50,
    "Id. Decision Makers": 60, "Perception Analysis": 70, "Proposal/Price Quote": 75,
    "Negotiation/Review": 90, "Closed Won": 100, "Closed Lost": 0,
}


def err(code: str, message: str, fields: list[str] | None = None, status: int = 400) -> SalesforceApiError:
    return SalesforceApiError(status, code, message, fields)


def deactivation_message(reason: str) -> str:
    key = _REASON_ALIASES.get(reason.lower(), reason)
    return DEACTIVATION_BLOCKERS.get(key, reason)


# ---------------------------------------------------------------------------------------------- field coercion
def _bad_json(f: FieldInfo, value: Any, kind: str) -> SalesforceApiError:
    return err(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {type(value).__name__.upper()} value {value} or request may be "
        f"missing a required field",
    )


def _parse_datetime(value: str) -> str | None:
    text = value.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)([+-]\d{2}):?(\d{2})$", text)
    if m:
        text = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if "T" not in value and " " not in value:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def coerce_value(org: Org, od: ObjectDef, f: FieldInfo, value: Any) -> Any:
    """Validate and normalize one incoming value to the stored form (ids 18-char, datetimes +0000, '' -> None)."""
    t = f.type
    if t == "boolean":
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _bad_json(f, value, "boolean")
    if value is None or value == "":
        return None
    if t in ("string", "textarea", "phone", "url", "email", "picklist"):
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise _bad_json(f, value, "String")
        text = value if isinstance(value, str) else str(value)
        if f.length and len(text) > f.length:
            raise err("STRING_TOO_LONG", f"{f.label}: data value too large: {text} (max length={f.length})", [f.name])
        if t == "email" and not _EMAIL_RE.match(text):
            raise err("INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name])
        if t == "picklist" and f.restricted_picklist and text not in f.picklist_values:
            raise err("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                      f"{f.label}: bad value for restricted picklist field: {text}", [f.name])
        return text
    if t == "int":
        if isinstance(value, bool):
            raise _bad_json(f, value, "int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise _bad_json(f, value, "int")
    if t in ("double", "currency", "percent"):
        if isinstance(value, bool):
            raise _bad_json(f, value, "double")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _bad_json(f, value, "double") from None
    if t == "date":
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10]).isoformat()
            except ValueError:
                pass
        raise _bad_json(f, value, "date")
    if t == "datetime":
        parsed = _parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise _bad_json(f, value, "datetime")
        return parsed
    if t in ("reference", "id"):
        rid = normalize_id(value)
        if f.name == "OwnerId":
            if rid is None or rid[:3] not in ("005", "00G"):
                raise err("MALFORMED_ID", f"{f.label}: id value of incorrect type: {value}", [f.name])
            return rid  # checked by the ownership rules
        target = org.object_for_id(rid) if rid else None
        if rid is None or target not in f.reference_to:
            raise err("MALFORMED_ID", f"{f.label}: id value of incorrect type: {value}", [f.name])
        if org.get_live(rid) is None:
            raise err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f.name])
        return rid
    return value


def coerce_body(org: Org, od: ObjectDef, values: dict[str, Any], *, insert: bool) -> dict[str, Any]:
    """Check every key of a request body against the describe of `od` and return {FieldName: stored value}."""
    out: dict[str, Any] = {}
    forbidden: list[str] = []
    for key, value in values.items():
        if key == "attributes":
            continue
        f = od.field(key)
        if f is None:
            raise err("INVALID_FIELD", f"No such column '{key}' on sobject of type {od.name}", [key])
        if f.name == "Id" and not insert:
            continue  # collections carry the id in the record; the path/record decides which row changes
        if not (f.createable if insert else f.updateable):
            forbidden.append(f.name)
            continue
        out[f.name] = value
    if forbidden:
        raise err(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(forbidden)}. Please check the security settings of this "
            "field and verify that it is read/write for your profile or permission set.",
            forbidden,
        )
    return {name: coerce_value(org, od, od.fields[name], v) for name, v in out.items()}


# ---------------------------------------------------------------------------------------------- computed fields
def _full_name(rec: dict[str, Any]) -> str:
    return " ".join(p for p in (rec.get("FirstName"), rec.get("LastName")) if p)


def compute(org: Org, od: ObjectDef, rec: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Fill the fields Salesforce derives, so SOQL filters like `IsClosed = false` work on stored rows."""
    name = od.name
    if name in ("User", "Contact", "Lead"):
        rec["Name"] = _full_name(rec)
    if name == "User":
        lic_id = org._license_of_profile(rec["ProfileId"])
        lic = org.live["UserLicense"].get(lic_id or "")
        rec["UserType"] = "CsnOnly" if lic and "Chatter" in (lic["LicenseDefinitionKey"] or "") else "Standard"
        rec["IsPortalEnabled"] = False
    elif name == "Opportunity":
        rec["IsClosed"] = rec["StageName"] in _OPP_CLOSED
        rec["IsWon"] = rec["StageName"] == "Closed Won"
        if rec["Probability"] is None or (old is not None and old["StageName"] != rec["StageName"]):
            rec["Probability"] = float(_STAGE_PROBABILITY.get(rec["StageName"], 10))
    elif name == "Case":
        rec["IsClosed"] = rec["Status"] == "Closed"
        if rec["IsClosed"] and not rec["ClosedDate"]:
            rec["ClosedDate"] = org.now_str()
        elif not rec["IsClosed"]:
            rec["ClosedDate"] = None
        if rec["CaseNumber"] is None:
            rec["CaseNumber"] = org.next_case_number()
    elif name == "Task":
        rec["IsClosed"] = rec["Status"] == "Completed"
    elif name == "Lead":
        if rec["IsConverted"] and not rec["ConvertedDate"]:
            rec["ConvertedDate"] = org.now_str()[:10]
    elif name == "PermissionSet":
        rec["IsOwnedByProfile"] = rec["ProfileId"] is not None
        rec["Type"] = "Profile" if rec["IsOwnedByProfile"] else (rec["Type"] or "Regular")
    elif name == "PermissionSetAssignment":
        rec["IsActive"] = True
    elif name == "PermissionSetGroup":
        rec["Status"] = rec["Status"] or "Updated"


def developer_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "X"
    return ("X" + name if name[0].isdigit() else name)[:80]


# ---------------------------------------------------------------------------------------------- uniqueness
def _check_unique(org: Org, od: ObjectDef, rec: dict[str, Any], old: dict[str, Any] | None) -> None:
    for f in od.fields.values():
        if not f.unique or rec[f.name] is None:
            continue
        if old is not None and old[f.name] == rec[f.name]:
            continue
        holder = org.unique[(od.name, f.name)].get(org.unique_key(f, rec[f.name]))
        if holder is None or holder == rec["Id"]:
            continue
        if od.name == "User" and f.name == "Username":
            raise err("DUPLICATE_USERNAME", DUPLICATE_USERNAME_MESSAGE, ["Username"])
        if od.name == "User" and f.name == "FederationIdentifier":
            raise err("DUPLICATE_VALUE", "This Federation ID is already in use. Use a different Federation ID.",
                      ["FederationIdentifier"])
        if od.name == "User" and f.name == "CommunityNickname":
            raise err("DUPLICATE_COMM_NICKNAME", "Duplicate Nickname.<br>Another user has already selected this "
                      "nickname.<br>Please select another.", ["CommunityNickname"])
        raise err("DUPLICATE_VALUE", f"duplicate value found: {f.name} duplicates value on record with id: {holder}",
                  [f.name])


# ---------------------------------------------------------------------------------------------- users
def _is_admin_profile(org: Org, profile_id: str | None) -> bool:
    prof = org.live["Profile"].get(profile_id or "")
    return bool(prof and prof["PermissionsModifyAllData"])


def _seat_check(org: Org, profile_id: str) -> None:
    lic_id = org._license_of_profile(profile_id)
    lic = org.live["UserLicense"].get(lic_id or "")
    if lic is not None and org.used_licenses(lic["Id"]) >= int(lic["TotalLicenses"] or 0):
        raise err("LICENSE_LIMIT_EXCEEDED", "License Limit Exceeded")


def _user_rules(org: Org, rec: dict[str, Any], old: dict[str, Any] | None) -> None:
    username = rec["Username"]
    if old is None or username != old["Username"]:
        if username is not None and not _EMAIL_RE.match(username):
            raise err("FIELD_INTEGRITY_EXCEPTION",
                      "Username must be in the form of an email address (for example, john@acme.com)", ["Username"])
        others = {u.lower() for u in org.config.get("salesforce.other_org_usernames", []) or []}
        if username is not None and username.lower() in others:
            raise err("DUPLICATE_USERNAME", DUPLICATE_USERNAME_MESSAGE, ["Username"])
    if rec["CommunityNickname"] is None:
        base = (rec["Email"] or rec["Username"] or "user").split("@")[0][:30] or "user"
        nick, n = base, 1
        idx = org.unique[("User", "CommunityNickname")]
        while nick.lower() in idx:
            n += 1
            nick = f"{base}{n}"
        rec["CommunityNickname"] = nick
    if rec["ManagerId"] is not None and rec["ManagerId"] == rec["Id"]:
        raise err("FIELD_INTEGRITY_EXCEPTION", "Manager: A user can't be their own manager.", ["ManagerId"])
    was_active = bool(old and old["IsActive"])
    if rec["IsActive"]:
        old_lic = org._license_of_profile(old["ProfileId"]) if old else None
        new_lic = org._license_of_profile(rec["ProfileId"])
        if not was_active or old_lic != new_lic:
            _seat_check(org, rec["ProfileId"])
    if old is not None and was_active and not rec["IsActive"]:
        reason = org.deactivation_blockers.get(rec["Id"])
        if reason:
            raise err("FIELD_INTEGRITY_EXCEPTION", deactivation_message(reason), [])
    losing_admin = old is not None and was_active and _is_admin_profile(org, old["ProfileId"]) and (
        not rec["IsActive"] or not _is_admin_profile(org, rec["ProfileId"])
    )
    if losing_admin:
        others_active = any(
            u["IsActive"] and u["Id"] != rec["Id"] and _is_admin_profile(org, u["ProfileId"])
            for u in org.live["User"].values()
        )
        if not others_active:
            raise err("CANNOT_DISABLE_LAST_ADMIN", "Cannot disable the last active system administrator", [])


def _profile_permission_set(org: Org, profile_id: str) -> str | None:
    for ps in org.live["PermissionSet"].values():
        if ps["ProfileId"] == profile_id:
            return ps["Id"]
    return None


def _after_user_write(org: Org, rec: dict[str, Any], old: dict[str, Any] | None, actor: str | None) -> None:
    """Every user has a UserLogin row and an assignment of its profile's own permission set."""
    if old is None:
        login = org.blank("UserLogin", org.new_id("UserLogin"), actor)
        login["UserId"] = rec["Id"]
        org.put("UserLogin", login)
    if old is None or old["ProfileId"] != rec["ProfileId"]:
        ps_id = _profile_permission_set(org, rec["ProfileId"])
        if old is not None:
            old_ps = _profile_permission_set(org, old["ProfileId"])
            psa_id = org.psa_keys.get((rec["Id"], old_ps or ""))
            if psa_id:
                org.remove("PermissionSetAssignment", psa_id)
        if ps_id and (rec["Id"], ps_id) not in org.psa_keys:
            psa = org.blank("PermissionSetAssignment", org.new_id("PermissionSetAssignment"), actor)
            psa.update(AssigneeId=rec["Id"], PermissionSetId=ps_id, IsActive=True)
            org.put("PermissionSetAssignment", psa)


# ---------------------------------------------------------------------------------------------- other setup objects
def _psa_rules(org: Org, rec: dict[str, Any]) -> None:
    ps_id, psg_id = rec["PermissionSetId"], rec["PermissionSetGroupId"]
    if ps_id is None and psg_id is None:
        raise err("REQUIRED_FIELD_MISSING", "Required fields are missing: [PermissionSetId]", ["PermissionSetId"])
    if ps_id is not None and psg_id is not None:
        raise err("FIELD_INTEGRITY_EXCEPTION", "Specify either a permission set or a permission set group, not both.",
                  ["PermissionSetId", "PermissionSetGroupId"])
    key = ps_id or psg_id
    if (rec["AssigneeId"], key) in org.psa_keys:
        raise err("DUPLICATE_VALUE",
                  f"Duplicate PermissionSetAssignment. Assignee: {rec['AssigneeId']}; Permission Set: {key}", [])
    if ps_id is None:
        return
    ps = org.live["PermissionSet"][ps_id]
    if ps["IsOwnedByProfile"]:
        raise err("FIELD_INTEGRITY_EXCEPTION", PROFILE_PSA_MESSAGE, ["PermissionSetId"])
    user = org.live["User"][rec["AssigneeId"]]
    lic = ps["LicenseId"]
    if lic and lic.startswith("100") and org._license_of_profile(user["ProfileId"]) != lic:
        raise err("FIELD_INTEGRITY_EXCEPTION", f"Can't assign permission set {ps['Label']} to user {user['Name']}. "
                  f"The user license doesn't allow the permission: {ps['Label']}", [])
    if lic and lic.startswith("0PL") and (user["Id"], lic) not in org.psla_keys:
        psl = org.live["PermissionSetLicense"].get(lic)
        label = psl["MasterLabel"] if psl else lic
        raise err("FIELD_INTEGRITY_EXCEPTION", f"Can't assign permission set {ps['Label']} to user {user['Name']}. "
                  f"The user doesn't have the permission set license this permission set requires: {label}", [])


def _psla_rules(org: Org, rec: dict[str, Any]) -> None:
    key = (rec["AssigneeId"], rec["PermissionSetLicenseId"])
    if key in org.psla_keys:
        raise err("DUPLICATE_VALUE", f"duplicate value found: PermissionSetLicenseId duplicates value on record with "
                  f"id: {org.psla_keys[key]}", ["PermissionSetLicenseId"])
    psl = org.live["PermissionSetLicense"][rec["PermissionSetLicenseId"]]
    if org.psl_used[psl["Id"]] >= int(psl["TotalLicenses"] or 0):
        raise err("LICENSE_LIMIT_EXCEEDED", "License Limit Exceeded")


def _group_member_rules(org: Org, rec: dict[str, Any]) -> None:
    group = org.live["Group"][rec["GroupId"]]
    if group["Type"] not in ("Regular", "Queue"):
        raise err("FIELD_INTEGRITY_EXCEPTION", f"You can't add members to a group of type {group['Type']}",
                  ["GroupId"])
    key = (rec["GroupId"], rec["UserOrGroupId"])
    if key in org.member_keys:
        raise err("DUPLICATE_VALUE", f"duplicate value found: UserOrGroupId duplicates value on record with id: "
                  f"{org.member_keys[key]}", ["UserOrGroupId"])


def _queue_sobject_rules(org: Org, rec: dict[str, Any]) -> None:
    group = org.live["Group"][rec["QueueId"]]
    if group["Type"] != "Queue":
        raise err("FIELD_INTEGRITY_EXCEPTION", "Group is not a queue", ["QueueId"])
    target = org.object_def(rec["SobjectType"] or "")
    if target is None or not target.queueable:
        raise err("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                  f"Sobject Type: bad value for restricted picklist field: {rec['SobjectType']}", ["SobjectType"])
    rec["SobjectType"] = target.name
    if (rec["QueueId"], target.name) in org.queue_sobjects:
        raise err("DUPLICATE_VALUE", "duplicate value found: SobjectType duplicates value on record", ["SobjectType"])


def _owner_rules(org: Org, od: ObjectDef, rec: dict[str, Any], old: dict[str, Any] | None) -> None:
    owner = rec["OwnerId"]
    changed = old is None or old["OwnerId"] != owner
    if owner.startswith("00G"):
        if not changed:
            return
        if not od.queueable:
            raise err("FIELD_INTEGRITY_EXCEPTION", f"Owner ID: id value of incorrect type: {owner}", ["OwnerId"])
        group = org.live["Group"].get(owner)
        if group is None or group["Type"] != "Queue" or (owner, od.name) not in org.queue_sobjects:
            raise err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OwnerId"])
        return
    user = org.live["User"].get(owner)
    if user is None:
        raise err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OwnerId"])
    if user["IsActive"]:
        return
    allow = bool(org.config.get("salesforce.allow_inactive_owner_assignment", False))
    if od.name in _ACTIVE_OWNER_REQUIRED or (changed and not allow):
        raise err("INACTIVE_OWNER_OR_USER",
                  f"operation performed with inactive user [{owner}] as owner of {od.label.lower()}", [])


# ---------------------------------------------------------------------------------------------- validation rules
def _validation_rules(org: Org, od: ObjectDef, rec: dict[str, Any]) -> None:
    """The org's validation rules (config `salesforce.validation_rules`), checked on every insert and update like
    Salesforce does after the system rules: a record that matches a rule's condition is refused with the rule's
    message as FIELD_CUSTOM_VALIDATION_EXCEPTION, naming the field the rule displays its error on.

    A rule is either {"object", "field", "pattern" (a regex searched in the value) or "blank": true, "message"} or
    the short form "Object.Field=Value" (the record may not hold exactly that value; ids compare in 15 or 18
    characters)."""
    for rule in org.config.get("salesforce.validation_rules", []) or []:
        if isinstance(rule, str):
            target, _, expected = rule.partition("=")
            sobject, _, field_name = target.partition(".")
            if sobject != od.name or field_name not in rec:
                continue
            value = rec[field_name]
            if value == expected or (isinstance(value, str) and normalize_id(expected) == value):
                raise err("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                          f"{od.label} records may not have {field_name} = {expected} (validation rule)", [field_name])
            continue
        if str(rule.get("object", "")).lower() != od.name.lower():
            continue
        f = od.field(str(rule.get("field", "")))
        if f is None:
            continue
        text = "" if rec.get(f.name) is None else str(rec.get(f.name))
        hit = not text if rule.get("blank") else bool(re.search(str(rule.get("pattern", "")), text))
        if hit:
            raise err("FIELD_CUSTOM_VALIDATION_EXCEPTION", str(rule.get("message") or "validation rule"), [f.name])


# ---------------------------------------------------------------------------------------------- entry points
def _object_rules(org: Org, od: ObjectDef, rec: dict[str, Any], old: dict[str, Any] | None) -> None:
    name = od.name
    if name == "User":
        _user_rules(org, rec, old)
    elif name == "PermissionSetAssignment" and old is None:
        _psa_rules(org, rec)
    elif name == "PermissionSetLicenseAssign" and old is None:
        _psla_rules(org, rec)
    elif name == "GroupMember" and old is None:
        _group_member_rules(org, rec)
    elif name == "QueueSobject" and old is None:
        _queue_sobject_rules(org, rec)
    elif name == "UserLogin" and rec["IsPasswordLocked"] and not (old and old["IsPasswordLocked"]):
        raise err("FIELD_INTEGRITY_EXCEPTION", "Is Password Locked can only be set to false", ["IsPasswordLocked"])
    elif name in ("UserRole", "Group") and rec["DeveloperName"] is None:
        rec["DeveloperName"] = developer_name(rec["Name"] or "")
    if od.ownable:
        _owner_rules(org, od, rec, old)
    _validation_rules(org, od, rec)


def _lock_fault(org: Org, od: ObjectDef, rec: dict[str, Any]) -> None:
    faults = org.faults
    rate = float(faults.get("salesforce.record_lock_rate", 0) or 0) if faults is not None else 0.0
    if rate > 0 and od.ownable and _lock_rng.random() < rate:
        raise err("UNABLE_TO_LOCK_ROW", f"unable to obtain exclusive access to this record or 1 records: {rec['Id']}")


def insert(org: Org, od: ObjectDef, values: dict[str, Any], actor: str | None) -> str:
    if not od.createable:
        raise err("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be inserted: {od.label}")
    clean = coerce_body(org, od, values, insert=True)
    rid = org.new_id(od.name)
    rec = org.blank(od.name, rid, actor)
    for f in od.fields.values():
        if f.default is not None and f.type != "boolean" and not str(f.default).startswith("$"):
            rec[f.name] = f.default
    rec.update(clean)
    if od.ownable and rec["OwnerId"] is None:
        rec["OwnerId"] = actor
    missing = [
        f.name for f in od.fields.values()
        if f.required_on_create and f.name in rec and rec[f.name] is None and f.name not in ("OwnerId",)
    ]
    if missing:
        raise err("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
    _object_rules(org, od, rec, None)
    compute(org, od, rec, None)
    _check_unique(org, od, rec, None)
    org.put(od.name, rec)
    if od.name == "User":
        _after_user_write(org, rec, None, actor)
    return rid


def update(org: Org, od: ObjectDef, old: dict[str, Any], values: dict[str, Any], actor: str | None) -> None:
    if not od.updateable:
        raise err("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be updated: {od.label}")
    _lock_fault(org, od, old)
    clean = coerce_body(org, od, values, insert=False)
    nulls = [k for k, v in clean.items() if v is None and not od.fields[k].nillable and od.fields[k].type != "boolean"]
    if nulls:
        raise err("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(nulls)}]", nulls)
    rec = dict(old)
    rec.update(clean)
    _object_rules(org, od, rec, old)
    compute(org, od, rec, old)
    _check_unique(org, od, rec, old)
    now = org.now_str()
    rec.update(LastModifiedDate=now, SystemModstamp=now, LastModifiedById=actor or rec["LastModifiedById"])
    org.put(od.name, rec)
    if od.name == "User":
        _after_user_write(org, rec, old, actor)


def delete(org: Org, od: ObjectDef, rec: dict[str, Any], actor: str | None) -> None:
    if od.name == "User":
        raise err("DELETE_FAILED", "Cannot delete a user. Users can't be deleted; deactivate the user "
                  "(IsActive = false) instead.", [])
    if not od.deletable:
        raise err("INVALID_TYPE_FOR_OPERATION", "entity type cannot be deleted", [])
    if od.name == "PermissionSetAssignment" and rec["PermissionSetId"]:
        ps = org.live["PermissionSet"].get(rec["PermissionSetId"])
        if ps and ps["IsOwnedByProfile"]:
            raise err("FIELD_INTEGRITY_EXCEPTION", PROFILE_PSA_MESSAGE, [])
    if od.name == "PermissionSet" and rec["IsOwnedByProfile"]:
        raise err("FIELD_INTEGRITY_EXCEPTION", "You can't delete a permission set that is owned by a profile.", [])
    if od.name == "UserRole" and any(u["UserRoleId"] == rec["Id"] for u in org.live["User"].values()):
        raise err("DELETE_FAILED", "Cannot delete a role that has users assigned to it.", [])
    org.remove(od.name, rec["Id"])
    if od.name == "Group":  # members and queue object types go with the group
        for gm_id in [i for (g, _), i in org.member_keys.items() if g == rec["Id"]]:
            org.remove("GroupMember", gm_id)
        for qs in [q for q in org.live["QueueSobject"].values() if q["QueueId"] == rec["Id"]]:
            org.remove("QueueSobject", qs["Id"])
    if od.name == "PermissionSet":
        for psa_id in [i for (_, p), i in org.psa_keys.items() if p == rec["Id"]]:
            org.remove("PermissionSetAssignment", psa_id)
