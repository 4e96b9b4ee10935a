"""`idsync review ...`: revocations that need a person, e.g. Salesforce refused to deactivate the last admin or a
default owner. The user is frozen (cannot log in) but still active; the item says why and what Salesforce answered.

Items live in `shared/identity_links.py`, one per identity, each with a stable short id. `resolve` (closing an item
once the blocker is removed) comes with the feature that acts on it; this group is where it will live.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.time_display import when, with_iso_times

review_app = typer.Typer(help="Revocations that need a person (blocked deactivations).", no_args_is_help=True)
app.add_typer(review_app, name="review")


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
        console.print(f"no review item {item_id} (see `idsync review list`)", style="red", markup=False)
        raise typer.Exit(1)
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
        ("opened", when(item.get("created_at"))),
        ("last seen", when(item.get("updated_at"))),
        ("correlation id", item.get("correlation_id") or "-"),
    ]
    width = max(len(name) for name, _ in rows)
    typer.echo("\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))


@review_app.command("resolve")
def review_resolve(
    item_id: Annotated[str, typer.Argument(help="review id (see `idsync review list`)")],
    link: Annotated[str | None, typer.Option("--link", help="link the user to this Salesforce user id")] = None,
    create: Annotated[bool, typer.Option("--create", help="create a new Salesforce user instead of matching")] = False,
    ignore: Annotated[bool, typer.Option("--ignore", help="close it and do not raise it again for this user")] = False,
) -> None:
    """Decide a matching or provisioning review: link to a given Salesforce user, create a new one, or ignore it.
    The user is then planned again (by the running sync workers)."""
    from shared.audit import audit
    from shared.audit_events import operator_actor
    from shared.dirty_users import DirtyUsers
    from shared.dispatch import schedule_drain
    from shared.provisioning.review_decisions import ReviewDecisions

    if sum((link is not None, create, ignore)) != 1:
        raise typer.BadParameter("give exactly one of --link SFID, --create or --ignore")
    settings = _settings()
    links = _links()
    item = links.get_review(item_id)
    if item is None:
        console.print(f"no review item {item_id} (see `idsync review list`)", style="red", markup=False)
        raise typer.Exit(1)
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
    links.resolve_review(item.get("key") or entra_id)
    audit(links.redis, "review_resolved", entra_id, link, decision, item.get("correlation_id"),
          upn=item.get("upn"), actor=operator_actor(), review_id=item["id"], topic=topic)
    backlog = DirtyUsers(links.redis)
    backlog.mark([entra_id])
    schedule_drain(components.celery_app(settings), backlog, settings.graph_tenant_id or "default")
    console.print(f"{item['id']}: {decision}; {item.get('upn') or entra_id} is planned again", markup=False)
