"""An offboarding plan for people (`idsync offboard --dry-run`): the steps, a summary per object and new owner,
then every record with its new owner and the rule, then what no rule could place. `rich` only where it is shown."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from shared.offboarding.plan import OffboardingPlan


def render_offboarding_plan(plan: OffboardingPlan, console: Console) -> None:
    console.print(Text.assemble((plan.upn or plan.entra_id, "bold"), f"  {plan.mode.value}",
                                f"  (Salesforce {plan.sf_user_id})" if plan.sf_user_id else ""))
    console.print(Text(plan.reason, style="dim"))
    steps = [("freeze", "log-in blocked at once" if plan.freeze else "already frozen"),
             ("deactivate", "IsActive = false" if plan.deactivate else "already inactive (or not a leaver)")]
    if plan.mode.value != "offboard":
        steps = [steps[0]] if plan.freeze else []
    for name, what in steps:
        console.print(Text(f"  {name}: {what}"))
    if plan.mode.value != "offboard":
        return
    if not plan.configured:
        console.print(Text("no offboarding section in the mapping: records stay with the leaver", style="yellow"))

    if plan.open_counts:
        summary = Table(title=f"Open records ({plan.record_count})", show_edge=False, pad_edge=False)
        for col in ("object", "open", "new owner", "records", "rule", "via"):
            summary.add_column(col, overflow="fold")
        groups = Counter((m.record.sobject, m.owner_name, m.rule) for m in plan.moves)
        shown: set[str] = set()
        for (sobject, owner, rule), count in sorted(groups.items()):
            first = sobject not in shown
            shown.add(sobject)
            via = "Bulk API 2.0" if sobject in plan.bulk_objects else "sObject Collections"
            summary.add_row(sobject if first else "", str(plan.open_counts.get(sobject, 0)) if first else "", owner,
                            str(count), Text(rule, style="dim"), via if first else "")
        for sobject, count in plan.open_counts.items():
            if sobject not in shown:
                summary.add_row(sobject, str(count), "—", "0", "", "")
        console.print(summary)

    if plan.moves:
        table = Table(title="Records to move", show_edge=False, pad_edge=False)
        for col in ("object", "record", "name", "new owner", "rule"):
            table.add_column(col, overflow="fold")
        for move in plan.moves:
            table.add_row(move.record.sobject, move.record.id, move.record.label, move.owner_name,
                          Text(move.rule, style="dim"))
        console.print(table)
    for item in plan.unplaced:
        console.print(Text(f"not placeable: {item.record.sobject} {item.record.id} {item.record.label}: "
                           + "; ".join(item.reasons), style="yellow"))
    if plan.licences:
        console.print(Text("licences reclaimed: " + ", ".join(h.key for h in plan.licences)))
