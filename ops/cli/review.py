"""`idsync review ...`: work that needs a person. Salesforce refused to deactivate a user (a default lead owner, the
last admin...: the user is frozen but still active), or a leaver's open records no rule could place. Each item says
why, what Salesforce answered and what the admin does (where in Setup).

Items live in `shared/identity_links.py`, one per identity and topic, each with a stable short id. `resolve ID`
takes ONE action, named by an option: `--retry` (blocked deactivations and unplaced records: try again now; the
item closes itself when that succeeds). Matching reviews get their own actions (`--link`, `--create`, `--ignore`)
here too: each action is an option and `_ACTIONS` says which reasons it applies to.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.errors import fail
from ops.time_display import when, with_iso_times

review_app = typer.Typer(help="Work that needs a person (blocked deactivations, records no rule could place).",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


def _unknown(item_id: str) -> typer.Exit:
    """An id that names no open item: bad input (exit 2), one line on stderr."""
    return fail(f"no review item {item_id!r} (`idsync review list` lists the open items)")


def _links() -> Any:
    from shared.identity_links import IdentityLinks

    return IdentityLinks(components.redis_client(_settings()))


@review_app.command("list")
def review_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Open review items, oldest first."""
    items = _links().list_reviews()
    if as_json:
        typer.echo(json.dumps(with_iso_times(items), indent=2))
        return
    table = Table(title=f"Review items ({len(items)})")
    for col in ("id", "UPN", "reason", "Salesforce answer", "opened", "Entra id"):
        table.add_column(col, overflow="fold")
    for item in items:
        table.add_row(item["id"], item.get("upn") or "-", item["reason"], item.get("code") or item["detail"][:80],
                      when(item.get("created_at")), item["entra_id"])
    console.print(table)
    if items:
        console.print("details: idsync review show ID", markup=False)


@review_app.command("show")
def review_show(
    item_id: Annotated[str, typer.Argument(help="review id (or the user's Entra object id)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One item in full: who, why the deactivation was blocked, and what Salesforce said."""
    item = _links().get_review(item_id)
    if item is None:
        raise _unknown(item_id)
    if as_json:
        typer.echo(json.dumps(with_iso_times(item), indent=2))
        return
    rows = [
        ("id", item["id"]),
        ("user", item.get("upn") or "-"),
        ("Entra id", item["entra_id"]),
        ("Salesforce id", item.get("sf_user_id") or "-"),
        ("reason", item["reason"]),
        ("Salesforce code", item.get("code") or "-"),
        ("detail", item["detail"]),
        ("fix", item.get("fix") or "-"),
        *([("records", f"{item.get('record_count')} (first {len(item['records'])} listed in --json)")]
          if item.get("records") else []),
        ("opened", when(item.get("created_at"))),
        ("last seen", when(item.get("updated_at"))),
        ("correlation id", item.get("correlation_id") or "-"),
    ]
    width = max(len(name) for name, _ in rows)
    typer.echo("\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))


#: Which review reasons each action of `resolve` applies to, and the task that carries it out.
_ACTIONS: dict[str, dict[str, str]] = {
    "retry": {"deactivation_blocked": "revocation.retry_deactivation", "records_unplaced": "sync.transfer_ownership",
              "deprovision_rejected": "revocation.retry_deactivation"},
}


@review_app.command("resolve")
def review_resolve(
    item_id: Annotated[str, typer.Argument(help="review id (see `idsync review list`)")],
    retry: Annotated[bool, typer.Option("--retry", help="try again now (a blocked deactivation, unplaced records)")]
    = False,
    link: Annotated[str | None, typer.Option("--link", help="link the user to this Salesforce user id")] = None,
    create: Annotated[bool, typer.Option("--create", help="create a new Salesforce user instead of matching")] = False,
    ignore: Annotated[bool, typer.Option("--ignore", help="close it and do not raise it again for this user")] = False,
) -> None:
    """Act on a review item: --retry (a blocked deactivation, unplaced records), or for a matching or provisioning
    item --link SFID, --create or --ignore (the user is then planned again by the sync workers)."""
    chosen = [name for name, given in (("retry", retry), ("link", link is not None), ("create", create),
                                        ("ignore", ignore)) if given]
    if len(chosen) != 1:
        typer.echo("idsync: review resolve: choose one action: --retry, --link SFID, --create or --ignore", err=True)
        raise typer.Exit(2)
    if chosen[0] != "retry":
        _decide(item_id, link, create)
        return
    action = "retry"
    links = _links()
    item = links.get_review(item_id)
    if item is None:
        raise _unknown(item_id)
    task = _ACTIONS[action].get(item["reason"])
    if task is None:
        raise fail(f"--{action} does not apply to a '{item['reason']}' item")
    from shared import audit as audit_mod
    from shared.audit_events import operator_actor
    from shared.dispatch import publish
    from shared.events import EventKind, EventSource, IdentityEvent

    settings = _settings()
    if item["reason"] == "deprovision_rejected":
        # The operator now wants this user deactivated: their rejected hold no longer keeps them active (the guard
        # counts the deactivation like any other) and the item is done once the retry is queued.
        from shared.deprovision_guard import REVIEW_TOPIC, DeprovisionGuard

        DeprovisionGuard(links.redis, settings).forget_rejection(item["entra_id"])
        links.resolve_review(item["entra_id"], REVIEW_TOPIC)
    kind = EventKind.OWNERSHIP_TRANSFER if task.startswith("sync.") else EventKind.USER_DISABLED
    event = IdentityEvent(kind=kind, source=EventSource.OPERATOR, tenant=settings.graph_tenant_id or "",
                          object_id=item["entra_id"])
    publish(components.celery_app(settings), event, task)
    audit_mod.audit(components.redis_client(settings), "review_action", item["entra_id"], item.get("sf_user_id"),
                    action, event.correlation_id, upn=item.get("upn"), actor=operator_actor(), review_id=item["id"],
                    reason=item["reason"], task=task)
    console.print(f"{action} queued ({task}): the item closes when it succeeds; `idsync review show {item['id']}`",
                  markup=False)


def _decide(item_id: str, link: str | None, create: bool) -> None:
    """--link / --create / --ignore: what the next plan of this user does (`shared.provisioning.review_decisions`)."""
    from shared.audit import audit
    from shared.audit_events import operator_actor
    from shared.dirty_users import DirtyUsers
    from shared.dispatch import schedule_drain
    from shared.provisioning.review_decisions import ReviewDecisions

    settings = _settings()
    links = _links()
    item = links.get_review(item_id)
    if item is None:
        raise _unknown(item_id)
    entra_id, topic = item["entra_id"], item.get("topic")
    decisions = ReviewDecisions(links.redis)
    if link is not None:
        if not link.startswith("005") or len(link) not in (15, 18):
            raise typer.BadParameter(f"{link!r} is not a Salesforce user id (005...)")
        links.set_link(entra_id, link, item.get("upn"))
        decision = f"linked to {link}"
    elif create:
        decisions.force_create(entra_id)
        decision = "a new Salesforce user will be created"
    else:
        decisions.ignore(entra_id, topic)
        decision = "ignored for this user"
    links.resolve_review(entra_id, topic)
    audit(links.redis, "review_resolved", entra_id, link, decision, item.get("correlation_id"),
          upn=item.get("upn"), actor=operator_actor(), review_id=item["id"], topic=topic)
    backlog = DirtyUsers(links.redis)
    backlog.mark([entra_id])
    schedule_drain(components.celery_app(settings), backlog, settings.graph_tenant_id or "default")
    console.print(f"{item['id']}: {decision}; {item.get('upn') or entra_id} is planned again", markup=False)
