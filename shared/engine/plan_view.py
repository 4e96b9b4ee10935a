"""A plan for people: one table row per change (before -> after, and why), then review items and what idsync leaves
alone. Why a module of its own: `rich` is only needed where a plan is shown, not where thousands are computed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from shared.engine.plan import Plan


def _show(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def render_plan(plan: Plan, console: Console) -> None:
    title = Text.assemble((plan.upn or plan.entra_id, "bold"), f"  {plan.action.value}",
                          f"  (Salesforce {plan.sf_user_id})" if plan.sf_user_id else "")
    console.print(title)
    console.print(Text(plan.reason, style="dim"))
    if plan.changes:
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("change")
        table.add_column("target")
        table.add_column("before → after", overflow="fold")
        table.add_column("why", overflow="fold", style="dim")
        for change in plan.changes:
            if change.field_rules is not None and isinstance(change.after, dict):
                table.add_row(change.kind.value, change.target, "", Text(change.rule))
                for name, value in change.after.items():
                    table.add_row("", f"  {name}", Text(f"— → {_show(value)}"),
                                  Text(change.field_rules.get(name, "")))
                continue
            table.add_row(change.kind.value, change.target,
                          Text(f"{_show(change.before)} → {_show(change.after)}"), Text(change.rule))
        console.print(table)
    else:
        console.print("no changes")
    for review in plan.reviews:
        console.print(Text(f"review [{review.code.value}] {review.message}", style="yellow"))
    if plan.unmanaged:
        console.print(Text(f"not managed by idsync (left alone): {', '.join(plan.unmanaged)}", style="dim"))
    if plan.waiting_for_manager:
        console.print(Text(f"manager {plan.waiting_for_manager} is not provisioned yet: ManagerId follows once it is",
                           style="dim"))
