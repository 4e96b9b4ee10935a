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
