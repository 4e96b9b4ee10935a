"""The HTML report: one self-contained page a person can read (no script, no external CSS or fonts, so it opens
anywhere, is safe to mail around, and a browser shows it without fetching anything).

Sections: summary (users per action, changes, direct edits, review items), the guard's decision, drift by field (a
small inline SVG bar chart and the same figures as a table), direct Salesforce edits, then one table per action
(created, updated, deprovisioned), review items, failures and Salesforce users without an Entra counterpart. Tables
show at most `MAX_ROWS` rows each; the CSV and JSON reports hold every row.

Every summary figure carries a `data-count` / `data-total` attribute with its name, so a test (or a script) reads
the numbers from the rendered page without parsing prose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from shared.reconcile.reports import ReportData

MAX_ROWS = 1000
CHART_BARS = 20

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--accent:#0969da;--warn:#9a6700;--bad:#cf222e;
--good:#1a7f37}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0;padding:24px 32px;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}.muted{color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}.card{border:1px solid var(--line);border-radius:8px;
padding:10px 14px;min-width:120px;background:var(--bg)}.card .n{display:block;font-size:24px;font-weight:600}
.card.create .n{color:var(--good)}.card.deprovision .n{color:var(--bad)}.card.review .n{color:var(--warn)}
table{border-collapse:collapse;width:100%;margin:6px 0 4px}th,td{border-bottom:1px solid var(--line);
padding:4px 8px;text-align:left;vertical-align:top}th{background:var(--bg);font-weight:600}
td.v{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-word;max-width:380px}
.banner{border-radius:8px;padding:10px 14px;margin:12px 0}.banner.held{background:#fff8c5;border:1px solid #d4a72c}
.banner.allowed{background:#dafbe1;border:1px solid #4ac26b}.banner.dry{background:#ddf4ff;border:1px solid #54aeff}
.tag{display:inline-block;border-radius:10px;padding:0 7px;font-size:12px;background:#eaeef2}
.tag.direct{background:#ffebe9;color:var(--bad)}svg text{font:12px system-ui,sans-serif;fill:var(--fg)}
"""

_COUNT_LABELS = {"create": "to create" , "update": "to update", "deprovision": "to deprovision",
                 "review": "need a person", "unchanged": "unchanged", "ignored": "out of scope, not linked",
                 "skipped": "skipped (revoked meanwhile)", "salesforce_only": "Salesforce only",
                 "retry_later": "retried later", "guests": "guests (Contacts, contact lane)"}
_DONE_LABELS = {"create": "created", "update": "updated", "deprovision": "deprovisioned"}


def _e(value: Any) -> str:
    if value is None:
        return '<span class="muted">(empty)</span>'
    if isinstance(value, dict | list):
        return escape(json.dumps(value, ensure_ascii=False, default=str, sort_keys=True))
    return escape(str(value))


def _when(stamp: Any) -> str:
    try:
        return datetime.fromtimestamp(float(stamp), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return "-"


def _table(headers: list[str], rows: Iterable[list[str]], total: int, what: str) -> str:
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    shown = 0
    for row in rows:
        if shown >= MAX_ROWS:
            break
        out.append("<tr>" + "".join(row) + "</tr>")
        shown += 1
    out.append("</tbody></table>")
    if total > shown:
        out.append(f'<p class="muted">{total - shown} more {escape(what)} in the CSV and JSON reports.</p>')
    if total == 0:
        out = [f'<p class="muted">No {escape(what)}.</p>']
    return "".join(out)


def _td(value: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>"


def chart(drift: dict[str, int]) -> str:
    """Horizontal bars, one per drifted field (the largest `CHART_BARS`), as inline SVG."""
    items = list(drift.items())[:CHART_BARS]
    if not items:
        return '<p class="muted">No drift.</p>'
    top = max(v for _k, v in items)
    label_w, bar_w, row_h = 190, 460, 22
    height = row_h * len(items) + 8
    parts = [f'<svg role="img" aria-label="drift by field" width="{label_w + bar_w + 70}" height="{height}" '
             f'viewBox="0 0 {label_w + bar_w + 70} {height}" xmlns="http://www.w3.org/2000/svg">']
    for i, (name, value) in enumerate(items):
        y = 4 + i * row_h
        width = max(2, round(bar_w * value / top))
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{width}" height="{row_h - 8}" rx="3" fill="#0969da">'
                     f'<title>{escape(name)}: {value}</title></rect>'
                     f'<text x="{label_w + width + 6}" y="{y + 15}">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _user(row: dict[str, Any]) -> str:
    return _td(row.get("upn") or row.get("entra_id"))


def _value(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if row.get("change") == "create_user" and isinstance(value, dict):
        value = value.get("Username") or value
    return _td(value, "v")


def _changes(data: ReportData, action: str) -> Iterator[list[str]]:
    for row in data.rows("changes"):
        if not _in_section(row, action):
            continue
        tag = '<td><span class="tag direct">direct edit</span></td>' if row.get("direct_edit") else "<td></td>"
        yield [_user(row), _td(row.get("field")), _value(row, "before"), _value(row, "after"), tag,
               _td(row.get("rule"), "v")]


def _in_section(row: dict[str, Any], action: str) -> bool:
    """A reactivation (a user otherwise unchanged) is listed with the drifted users."""
    if row.get("change") == "reactivate":
        return action == "update"
    return bool(row.get("action") == action)


def _action_total(data: ReportData, action: str) -> int:
    return sum(1 for row in data.rows("changes") if _in_section(row, action))


def render(data: ReportData) -> str:
    s = data.summary()
    run_id = escape(str(s["run_id"]))
    counts = s["counts"]
    totals = s["totals"]
    dry = bool(s["dry_run"])
    verb = "planned (dry run: nothing was written)" if dry else "applied"
    head = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>idsync reconciliation {run_id}"
            f"</title><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><style>{_CSS}</style></head><body>",
            f'<header><h1>Reconciliation <span id="run-id">{run_id}</span></h1>',
            f'<p class="muted">{escape(verb)} &middot; started {_when(s["started_at"])}'
            + (f" &middot; {s['seconds']:.1f} s" if s.get("seconds") is not None else "")
            + (f" &middot; scope: {escape(', '.join(s['scope']))}" if s["scope"] else " &middot; every user")
            + "</p></header>"]
    if dry:
        head.append('<div class="banner dry">Dry run: this is the plan. Nothing was written to Salesforce, Entra or '
                    "idsync's own state. Run <code>idsync reconcile</code> to apply it.</div>")

    cards = ['<section id="summary"><h2>Summary</h2><div class="cards">']
    for key, value in counts.items():
        label = _COUNT_LABELS.get(key, key) if dry else _DONE_LABELS.get(key, _COUNT_LABELS.get(key, key))
        cards.append(f'<div class="card {escape(key)}"><span class="n" data-count="{escape(key)}">{int(value)}</span>'
                     f"users {escape(label)}</div>")
    labels = {"changes": "changes", "direct_edits": "direct Salesforce edits", "reviews": "review items",
              "deprovisions": "deactivations", "failures": "failed writes",
              "salesforce_only": "Salesforce users without an Entra user"}
    for key, value in totals.items():
        label = labels.get(key, key.replace("_", " "))
        cards.append(f'<div class="card"><span class="n" data-total="{escape(key)}">{int(value)}</span>'
                     f"{escape(label)}</div>")
    cards.append("</div></section>")

    guard = s.get("guard")
    if isinstance(guard, dict) and guard.get("deprovisions"):
        held = bool(guard.get("held"))
        text = (f"{guard['deprovisions']} deactivations of {guard.get('linked_total', '?')} linked users are HELD by "
                f"the mass-deprovisioning guard: the users are frozen, not deactivated. Approve with "
                f"<code>idsync approve {run_id}</code> or reject with <code>idsync reject {run_id}</code>."
                if held else f"{guard['deprovisions']} deactivations handed to the revocation lane (guard: "
                f"{escape(str(guard.get('reason') or 'allowed'))}).")
        cards.append(f'<div id="guard" class="banner {"held" if held else "allowed"}">{text}</div>')

    body = [f'<section id="drift"><h2>Drift by field</h2>{chart(s["drift_by_field"])}',
            _table(["field or entitlement", "changes"], ([_td(k), f'<td data-drift="{escape(k)}">{v}</td>']
                                                         for k, v in s["drift_by_field"].items()),
                   len(s["drift_by_field"]), "drifted fields"), "</section>"]

    direct = ([_user(r), _td(r.get("field")), _value(r, "before"), _value(r, "after"),
               _td(r.get("modified_by_name") or r.get("note")), _td(r.get("modified_at"))]
              for r in data.rows("changes") if r.get("direct_edit"))
    body.append('<section id="direct-edits"><h2>Direct Salesforce edits</h2><p class="muted">Changes made in '
                "Salesforce by someone other than idsync; Entra is authoritative, so each is put back.</p>"
                + _table(["user", "field", "Salesforce has", "Entra says", "last modified by", "at"], direct,
                         int(totals.get("direct_edits", 0)), "direct edits") + "</section>")

    for action, title in (("create", "Missing in Salesforce (created)" if not dry else "Missing in Salesforce"),
                          ("update", "Drifted users (updated)" if not dry else "Drifted users"),
                          ("deprovision", "Out of scope (deprovisioned)" if not dry else "Out of scope")):
        total = _action_total(data, action)
        body.append(f'<section id="{action}"><h2>{escape(title)} <span class="muted" data-section="{action}">'
                    f"{int(counts.get(action, 0))} users, {total} changes</span></h2>"
                    + _table(["user", "field", "before", "after", "", "rule"], _changes(data, action), total,
                             "changes") + "</section>")

    reviews = ([_user(r), _td(r.get("code")), _td(r.get("target")), _td(r.get("message"), "v"),
                _td(", ".join(r.get("candidates") or []) or None, "v")] for r in data.rows("reviews"))
    body.append('<section id="reviews"><h2>Review items</h2><p class="muted">Unmatched or ambiguous users and values '
                "Salesforce would refuse: nothing is written for them until a person decides "
                "(<code>idsync review list</code>).</p>"
                + _table(["user", "code", "about", "message", "candidates"], reviews, int(totals.get("reviews", 0)),
                         "review items") + "</section>")
    failures = ([_user(r), _td(r.get("change")), _td(r.get("target")), _td(r.get("code")), _td(r.get("message"), "v")]
                for r in data.rows("failures"))
    body.append('<section id="failures"><h2>Failed writes</h2>'
                + _table(["user", "change", "target", "code", "message"], failures, int(totals.get("failures", 0)),
                         "failed writes") + "</section>")
    sf_only = ([_td(r.get("username")), _td("active" if r.get("active") else "inactive"), _td(r.get("profile")),
                _td(r.get("last_modified_by")), _td(r.get("last_modified_at"))] for r in data.rows("salesforce_only"))
    body.append('<section id="salesforce-only"><h2>Salesforce users with no Entra counterpart</h2><p class="muted">'
                "Reported only: idsync never touches a user it cannot tie to an Entra account.</p>"
                + _table(["username", "state", "profile", "last modified by", "at"], sf_only,
                         int(totals.get("salesforce_only", 0)), "Salesforce-only users") + "</section>")
    calls = s.get("calls") or {}
    if calls:
        body.append('<footer><h2>API calls</h2><p class="muted">' + " &middot; ".join(
            f"{escape(k.replace('_', ' '))}: {v}" for k, v in calls.items()) + "</p></footer>")
    return "".join([*head, *cards, *body, "</body></html>\n"])


def write_html(data: ReportData, path: Path) -> None:
    path.write_text(render(data), encoding="utf-8")
