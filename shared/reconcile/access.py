"""The access report: who holds what in Salesforce, and why. What governance suites sell as the input to an access
review, from the same reads as a reconciliation (`runner`), writing nothing.

For every Salesforce user: the profile, role, permission sets (and permission set groups), permission set licences,
public groups and queues they hold, each with its status:
- `justified`: a mapping rule gives it to this user now; the Entra group(s) and the rule text (with its mapping
  line) are named, from `desired_user`, so the justification is exactly what the engine would grant;
- `granted_by_hand`: no rule gives it, and idsync did not grant it (someone assigned it in Salesforce);
- `pending_removal`: idsync granted it, no rule gives it any more: the next sync or reconciliation removes it;
- `out_of_scope`: the user's Entra account is enabled but outside the mapping's scope (a leaver to be);
- `entra_disabled`: the user's Entra account is disabled (a leaver);
- `no_entra_user`: the Salesforce user has no Entra counterpart (no link, no match).
Listed apart: entitlements no rule justifies (every status but `justified`), users holding entitlements while out
of scope (active Salesforce users with `out_of_scope` rows beyond their profile: a deactivated leaver keeps
its assignments and is no finding), and linked users whose Entra account is disabled (the users of the
`entra_disabled` rows). Each list and its count come from the rows themselves, so the summary, the lists and the
table's statuses cannot disagree.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from shared.engine import DesiredUser, EntraUser, graph_properties
from shared.engine.desired import desired_user
from shared.engine.salesforce_state import entitlement_key
from shared.provisioning.batch import SyncDeps
from shared.reconcile.run_state import RunLog, new_run_id
from shared.reconcile.runner import Options, Reconciler, _Run
from shared.reconcile.salesforce_side import RowView

#: Rows kept per section for the HTML page (the CSV holds every row).
MAX_HTML_ROWS = 2000
KIND_LABELS = {"profile": "profile", "role": "role", "ps": "permission set", "psg": "permission set group",
               "psl": "licence", "group": "public group", "queue": "queue"}
COLUMNS = ("username", "salesforce_id", "active", "entra_upn", "entra_state", "kind", "name", "status",
           "entra_groups", "rule")
_GROUP = re.compile(r"group rule '([^']+)'")


@dataclass
class AccessData:
    rows: list[dict[str, Any]] = field(default_factory=list)  # at most MAX_HTML_ROWS
    unjustified: int = 0
    justified: int = 0
    grant_count: int = 0
    user_count: int = 0
    by_status: dict[str, int] = field(default_factory=dict)  # rows per status
    by_hand: list[dict[str, Any]] = field(default_factory=list)  # every row no rule justifies (any such status)
    out_of_scope: list[dict[str, Any]] = field(default_factory=list)  # one per user with `out_of_scope` rows
    disabled: list[dict[str, Any]] = field(default_factory=list)  # one per user with `entra_disabled` rows
    sink: Callable[[dict[str, Any]], None] | None = None  # receives every row (the CSV is written as rows come)

    def add(self, row: dict[str, Any]) -> None:
        self.grant_count += 1
        self.by_status[row["status"]] = self.by_status.get(row["status"], 0) + 1
        if row["status"] == "justified":
            self.justified += 1
        else:
            self.unjustified += 1
            if len(self.by_hand) < MAX_HTML_ROWS:
                self.by_hand.append(row)
        if len(self.rows) < MAX_HTML_ROWS:
            self.rows.append(row)
        if self.sink is not None:
            self.sink(row)


def _held(view: RowView, catalog: Any, side: Any) -> Iterator[tuple[str, str, str]]:
    """(kind, name, Salesforce id) of everything the user holds."""
    sf_id = str(view["Id"])
    profile = view.get("ProfileId")
    if profile:
        yield "profile", catalog.profile_names.get(str(profile), str(profile)), str(profile)
    role = view.get("UserRoleId")
    if role:
        yield "role", catalog.role_names.get(str(role), str(role)), str(role)
    ent = side.entitlements
    for ps_id in ent.permission_sets.get(sf_id, {}):
        yield "ps", catalog.permission_set_names.get(ps_id, ps_id), ps_id
    for psg_id in ent.permission_set_groups.get(sf_id, {}):
        yield "psg", catalog.permission_set_group_names.get(psg_id, psg_id), psg_id
    for psl_id in ent.licences.get(sf_id, {}):
        yield "psl", catalog.permission_set_licenses.get(psl_id, psl_id), psl_id
    for group_id in ent.groups.get(sf_id, {}):
        key = catalog.group_keys.get(group_id, f"group:{group_id}")
        kind, _, name = key.partition(":")
        yield kind, name, group_id


def _wanted(desired: DesiredUser | None) -> dict[tuple[str, str], str]:
    """(kind, Salesforce id) -> the rule that grants it."""
    if desired is None or not desired.in_scope:
        return {}
    wanted: dict[tuple[str, str], str] = {}
    if desired.profile is not None:
        wanted[("profile", desired.profile.sf_id)] = desired.profile.rule
    if desired.role is not None:
        wanted[("role", desired.role.sf_id)] = desired.role.rule
    for kind, grants in desired.entitlements.items():
        for grant in grants.values():
            wanted[(kind, grant.sf_id)] = grant.rule
    return wanted


def _user_rows(data: AccessData, view: RowView, run: _Run, entra: EntraUser | None, desired: DesiredUser | None,
               granted: frozenset[str]) -> None:
    catalog, side = run.catalog, run.side
    wanted = _wanted(desired)
    entra_state = ("none" if entra is None else "disabled" if not entra.enabled else
                   "in scope" if desired is not None and desired.in_scope else "out of scope")
    data.user_count += 1
    statuses: set[str] = set()
    out_of_scope_entitlements = False  # an out-of-scope row for more than the profile every user has
    for kind, name, sf_id in _held(view, catalog, side):
        rule = wanted.get((kind, sf_id))
        key = kind if kind in ("role", "profile") else entitlement_key(kind, name)
        if entra is None:
            status = "no_entra_user"
        elif entra_state == "disabled":
            status = "entra_disabled"
        elif entra_state == "out of scope":
            status = "out_of_scope"
        elif rule is not None:
            status = "justified"
        elif key in granted:
            status = "pending_removal"
        else:
            status = "granted_by_hand"
        statuses.add(status)
        out_of_scope_entitlements |= status == "out_of_scope" and kind != "profile"
        data.add({"username": view.get("Username"), "salesforce_id": str(view["Id"]), "active": view.get("IsActive"),
                  "entra_upn": entra.upn if entra else None, "entra_state": entra_state, "kind": KIND_LABELS[kind],
                  "name": name, "status": status,
                  "entra_groups": ", ".join(dict.fromkeys(_GROUP.findall(rule or ""))) or None, "rule": rule})
    if entra is None:
        return
    if out_of_scope_entitlements and view.get("IsActive"):
        data.out_of_scope.append({"username": view.get("Username"), "entra_upn": entra.upn,
                                  "salesforce_active": bool(view.get("IsActive")),
                                  "reason": desired.reason if desired else ""})
    if "entra_disabled" in statuses:
        data.disabled.append({"username": view.get("Username"), "entra_upn": entra.upn,
                              "salesforce_active": bool(view.get("IsActive"))})


def build_access_report(deps: SyncDeps, sink: Callable[[dict[str, Any]], None] | None = None) -> AccessData:
    """Read both sides (as a dry-run reconciliation does) and classify every entitlement of every user; `sink`
    gets every row as it is classified."""
    mapping = deps.mappings.current()
    reconciler = Reconciler(deps)
    run = _Run(reconciler, RunLog(new_run_id(), dry_run=True), mapping, Options(dry_run=True))
    run._read()
    side = run.side
    assert side is not None
    data = AccessData(sink=sink)
    seen: set[str] = set()
    for page in deps.graph.user_pages(graph_properties(mapping), expand_manager=False):
        users = []
        for user_json in page:
            groups = [{"id": g, "displayName": run.groups.names.get(g, "")}
                      for g in run.groups.ids if str(user_json["id"]) in run.members[g]]
            users.append(EntraUser.from_graph(user_json, groups))
        for start in range(0, len(users), 200):
            chunk = users[start : start + 200]
            contexts = run._contexts(chunk)
            for user in chunk:
                ctx = contexts[user.id]
                view = ctx.state.user
                if not isinstance(view, RowView) or str(view["Id"]) in seen:
                    continue
                seen.add(str(view["Id"]))
                desired = desired_user(user, mapping, run.catalog, ctx.state.manager_sf_id)
                _user_rows(data, view, run, user, desired, ctx.state.granted)
    for view in side.users():
        if str(view["Id"]) not in seen:
            _user_rows(data, view, run, None, None, frozenset())
    return data


def write_access_report(deps: SyncDeps, path: Path) -> AccessData:
    """Build the report and write it: CSV rows as they are classified, or the HTML page at the end."""
    if path.suffix.lower() != ".csv":
        data = build_access_report(deps)
        path.write_text(render_access(data), encoding="utf-8")
        return data
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        return build_access_report(deps, lambda row: writer.writerow(
            {k: "" if row.get(k) is None else row[k] for k in COLUMNS}))


def _cells(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "".join(f"<td>{escape('' if row.get(k) is None else str(row[k]))}</td>" for k in keys)


def _section(title: str, anchor: str, rows: list[dict[str, Any]], keys: tuple[str, ...], total: int,
             note: str = "") -> str:
    head = "".join(f"<th>{escape(k.replace('_', ' '))}</th>" for k in keys)
    body = "".join(f"<tr>{_cells(r, keys)}</tr>" for r in rows[:MAX_HTML_ROWS])
    more = (f'<p class="muted">{total - len(rows[:MAX_HTML_ROWS])} more in the CSV report.</p>'
            if total > MAX_HTML_ROWS else "")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if rows else "<p>None.</p>"
    return (f'<section id="{anchor}"><h2>{escape(title)} <span class="muted" data-total="{anchor}">{total}</span>'
            f"</h2>{note}{table}{more}</section>")


def render_access(data: AccessData) -> str:
    from shared.reconcile.report_html import _CSS

    by_hand = data.by_hand
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8"><title>idsync access report</title>'
             f'<link rel="icon" href="data:,"><style>{_CSS}</style></head><body>',
             "<h1>Salesforce access report</h1>",
             f'<div class="cards"><div class="card"><span class="n" data-total="users">{data.user_count}</span>'
             f'Salesforce users</div><div class="card"><span class="n" data-total="entitlements">{data.grant_count}'
             f'</span>entitlements</div><div class="card create"><span class="n" data-total="justified">'
             f'{data.justified}</span>justified by a rule</div><div class="card review"><span class="n" '
             f'data-total="unjustified">{data.unjustified}</span>no rule justifies</div></div>',
             _section("Entitlements no rule justifies", "unjustified", by_hand,
                      ("username", "entra_upn", "kind", "name", "status"), data.unjustified,
                      '<p class="muted">granted_by_hand: assigned in Salesforce, not by idsync; pending_removal: '
                      "idsync granted it and will remove it; out_of_scope: the Entra account is enabled but out of "
                      "scope; entra_disabled: the Entra account is disabled; no_entra_user: the user has no Entra "
                      "account.</p>"),
             _section("Users holding entitlements while out of scope", "out-of-scope", data.out_of_scope,
                      ("username", "entra_upn", "salesforce_active", "reason"), len(data.out_of_scope)),
             _section("Linked users whose Entra account is disabled", "disabled", data.disabled,
                      ("username", "entra_upn", "salesforce_active"), len(data.disabled)),
             _section("Every entitlement", "all", data.rows,
                      ("username", "active", "entra_upn", "kind", "name", "status", "entra_groups", "rule"),
                      data.grant_count),
             "</body></html>\n"]
    return "".join(parts)
