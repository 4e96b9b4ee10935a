"""`idsync audit report`: per user, when access was granted and revoked, how long after the Entra change, and the
chain positions that prove it. Written as a self-contained HTML page (no scripts, no external files) or as CSV.

A "change" is every audit event of one user with one correlation id and one direction: a leaver's freeze,
deactivation and summary `revoke` record are one revocation whose evidence is all three sequence numbers. The summary
record carries the latency (Entra change observed -> Salesforce effect).
"""

from __future__ import annotations

import csv
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.audit_export import utc

GRANTED, REVOKED = "granted", "revoked"
#: Actions that take access away; `revoke` is the summary record of one leaver.
REVOKING = frozenset({"revoke", "freeze", "deactivate", "entitlement_remove"})
#: Actions that give access.
GRANTING = frozenset({"provision", "activate", "reactivate", "unfreeze", "entitlement_add", "reverse_flow_create"})
#: Outcomes meaning nothing changed in Salesforce: not access evidence.
NO_EFFECT = frozenset({"no_salesforce_user", "already_revoked", "skipped", "skipped_tombstone", "failed", "error",
                       "blocked", "pending", "in_sync", "handed_to_sync", "handed_to_revocation"})
#: Summary records: their outcome and time describe the whole change.
SUMMARY = frozenset({"revoke", "sync_user"})


@dataclass
class Change:
    direction: str
    time: float
    outcome: str
    actions: list[str]
    latency_ms: float | None
    observed_at: float | None
    rule: str | None
    actor: str
    correlation_id: str | None
    sf_user_id: str | None
    evidence: list[tuple[int, str]]  # (seq, hash)


@dataclass
class UserHistory:
    entra_id: str
    upn: str | None = None
    sf_user_ids: set[str] = field(default_factory=set)
    changes: list[Change] = field(default_factory=list)


def direction(event: dict[str, Any]) -> str | None:
    action, outcome = event.get("action"), event.get("outcome") or ""
    if outcome in NO_EFFECT:
        return None
    if action in REVOKING:
        return REVOKED
    if action in GRANTING or (action == "sync_user" and outcome == "reactivated"):
        return GRANTED
    return None


def build(entries: Iterable[dict[str, Any]], since: float | None = None, until: float | None = None,
          upn: str | None = None) -> list[UserHistory]:
    """Per-user access history from chain entries (checkpoints ignored), oldest change first, users by UPN."""
    events = [(e["seq"], e["hash"], e["event"]) for e in entries if e.get("type") == "event" and e.get("event")]
    upns: dict[str, str] = {}
    for _, _, ev in events:
        if ev.get("entra_id") and ev.get("upn"):
            upns[ev["entra_id"]] = ev["upn"]
    groups: dict[tuple[str, str, str], list[tuple[int, str, dict[str, Any]]]] = {}
    for seq, digest, ev in events:
        entra_id = ev.get("entra_id")
        when = float(ev.get("time") or 0)
        if not entra_id or (since is not None and when < since) or (until is not None and when >= until):
            continue
        if upn is not None and (upns.get(entra_id) or "").lower() != upn.lower():
            continue
        way = direction(ev)
        if way is None:
            continue
        groups.setdefault((entra_id, ev.get("correlation_id") or ev.get("id", ""), way), []).append((seq, digest, ev))
    users: dict[str, UserHistory] = {}
    for (entra_id, _, way), members in groups.items():
        members.sort(key=lambda m: m[0])
        summary = next((ev for _, _, ev in reversed(members) if ev.get("action") in SUMMARY), members[-1][2])
        latencies = [ev["latency_ms"] for _, _, ev in members if ev.get("latency_ms") is not None]
        observed = [ev["observed_at"] for _, _, ev in members if ev.get("observed_at") is not None]
        user = users.setdefault(entra_id, UserHistory(entra_id, upns.get(entra_id)))
        sf_ids = {ev["sf_user_id"] for _, _, ev in members if ev.get("sf_user_id")}
        user.sf_user_ids |= sf_ids
        user.changes.append(Change(
            direction=way,
            time=float(summary.get("time") or 0),
            outcome=str(summary.get("outcome") or ""),
            actions=[str(ev.get("action")) for _, _, ev in members],
            latency_ms=max(latencies) if latencies else None,
            observed_at=min(observed) if observed else None,
            rule=next((ev.get("rule") for _, _, ev in reversed(members) if ev.get("rule")), None),
            actor=str(summary.get("actor") or "idsync"),
            correlation_id=summary.get("correlation_id"),
            sf_user_id=summary.get("sf_user_id") or (sorted(sf_ids)[0] if sf_ids else None),
            evidence=[(seq, digest) for seq, digest, _ in members],
        ))
    for user in users.values():
        user.changes.sort(key=lambda c: c.time)
    return sorted(users.values(), key=lambda u: ((u.upn or "~").lower(), u.entra_id))


# ------------------------------------------------------------------------------------------------------ CSV
CSV_COLUMNS = ["upn", "entra_id", "sf_user_id", "change", "time_utc", "outcome", "actions", "observed_at_utc",
               "latency_ms", "rule", "actor", "correlation_id", "evidence_seqs", "evidence_hashes"]


def write_csv(users: list[UserHistory], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for user in users:
            for c in user.changes:
                writer.writerow({
                    "upn": user.upn or "", "entra_id": user.entra_id, "sf_user_id": c.sf_user_id or "",
                    "change": c.direction, "time_utc": utc(c.time), "outcome": c.outcome,
                    "actions": " > ".join(c.actions), "observed_at_utc": utc(c.observed_at),
                    "latency_ms": "" if c.latency_ms is None else round(c.latency_ms, 1), "rule": c.rule or "",
                    "actor": c.actor, "correlation_id": c.correlation_id or "",
                    "evidence_seqs": " ".join(str(s) for s, _ in c.evidence),
                    "evidence_hashes": " ".join(h for _, h in c.evidence),
                })


# ----------------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1b1f24;
padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .25rem}
.meta{color:#57606a;margin:0 0 1rem}.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
.granted{color:#1a7f37;font-weight:600}.revoked{color:#cf222e;font-weight:600}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;color:#57606a}.num{text-align:right;white-space:nowrap}
.summary{width:auto}.summary td{border:none;padding:.1rem 1.5rem .1rem 0}.when{white-space:nowrap}
"""


def _when(ts: float | None) -> str:
    """Readable in a table cell: 2026-11-30 08:15:02.123 (the column header says UTC)."""
    return "–" if ts is None else utc(ts)[:23].replace("T", " ")


def _ms(value: float | None) -> str:
    return "–" if value is None else (f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s")


def write_html(users: list[UserHistory], path: Path, *, title: str, verdict: str, intact: bool,
               scope: str) -> None:
    e = html.escape
    changes = [c for u in users for c in u.changes]
    revoked = [c for c in changes if c.direction == REVOKED]
    lat = sorted(c.latency_ms for c in revoked if c.latency_ms is not None)
    p99 = lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1) + 0.999))] if lat else None
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class=meta>{e(scope)}</p>',
        f'<p class={"ok" if intact else "bad"}>Trail verification: {e(verdict)}</p>',
        "<table class=summary>",
        f"<tr><td>users</td><td>{len(users)}</td></tr>",
        f"<tr><td>access granted</td><td>{sum(c.direction == GRANTED for c in changes)}</td></tr>",
        f"<tr><td>access revoked</td><td>{len(revoked)}</td></tr>",
        f"<tr><td>revocation latency (Entra change → Salesforce), worst / p99</td>"
        f"<td>{_ms(lat[-1] if lat else None)} / {_ms(p99)}</td></tr>",
        "</table>",
    ]
    if not users:
        parts.append("<p>No access was granted or revoked in this period.</p>")
    for user in users:
        name = user.upn or user.entra_id
        sf = ", ".join(sorted(user.sf_user_ids)) or "–"
        parts.append(f"<h2>{e(name)}</h2><p class=meta>Entra id <code>{e(user.entra_id)}</code> · Salesforce user "
                     f"<code>{e(sf)}</code></p>")
        parts.append("<table><tr><th>change</th><th>when (UTC)</th><th>outcome</th><th>Entra change seen (UTC)</th>"
                     "<th class=num>latency</th><th>rule</th><th>actor</th><th>evidence (chain seq: hash)</th></tr>")
        for c in user.changes:
            evidence = "<br>".join(f"<code>#{seq}: {e(digest[:16])}…</code>" for seq, digest in c.evidence)
            parts.append(
                f"<tr><td class={c.direction}>{c.direction}</td><td class=when>{e(_when(c.time))}</td>"
                f"<td>{e(c.outcome)}<br><code>{e(' › '.join(c.actions))}</code></td>"
                f"<td class=when>{e(_when(c.observed_at))}</td><td class=num>{_ms(c.latency_ms)}</td>"
                f"<td>{e(c.rule or '–')}</td><td>{e(c.actor)}</td><td>{evidence}</td></tr>")
        parts.append("</table>")
    parts.append("<p class=meta>Each evidence line is an entry of idsync's hash-chained audit trail: its sequence "
                 "number and SHA-256. <code>idsync audit verify</code> re-checks every hash, link and signed "
                 "checkpoint.</p></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
