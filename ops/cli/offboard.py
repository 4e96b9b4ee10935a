"""`idsync offboard <UPN|objectId> [--dry-run] [--json]`: one user's whole offboarding, shown and carried out.

The plan is the one the workers execute (`shared.offboarding.offboarding_plan`, from the same reader): freeze,
deactivate, every open record with its new owner and the rule that chose it, what no rule can place, licences to
reclaim. `--dry-run` stops there; for a user still enabled in Entra it previews what disabling them would do.

Without `--dry-run` the command does not act itself: it publishes the same revocation event a disable in Entra
produces (`revocation.revoke_user`, source "operator") and waits for the workers to finish the revocation and the
ownership transfer, then prints what they did. One implementation for every path, and the revocation lane's
guarantees (tombstone, blockers, retries) hold for an operator's offboarding too. A user Entra still enables is
refused: idsync would reactivate them on their next change.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.errors import EXIT_UNAVAILABLE, fail


def _entra_id(graph: Any, links: Any, target: str) -> str:
    """An object id as given, or the id of the user with that UPN (live or soft-deleted with a stored link); nobody:
    one line and exit 2 (bad input), as `idsync sync-user` answers."""
    from shared.mapping.model import GUID

    if GUID.match(target):
        return target
    user = graph.get_user(target, select=["id"])
    if user is not None:
        return str(user["id"])
    raise fail(f"no Entra user {target!r} (give a UPN or an object id; a deleted user: the object id, e.g. from "
               "`idsync review list`)")


@app.command()
def offboard(
    target: Annotated[str, typer.Argument(help="the user's UPN or Entra object id")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan, change nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for the workers")] = 60.0,
) -> None:
    """One user's offboarding plan (freeze, deactivate, records to move, licences) and its execution."""
    from shared.entra_status import DISABLED, EntraState, read_entra_user
    from shared.grants import Grants
    from shared.identity_links import IdentityLinks
    from shared.offboarding import offboarding_plan
    from shared.offboarding.mapping_access import current_mapping
    from shared.offboarding.reader import read_offboarding
    from shared.salesforce_client import SalesforceClient

    settings = _settings()
    redis = components.redis_client(settings)
    links, grants = IdentityLinks(redis), Grants(redis)
    graph = components.graph_client(settings, lane="sync")
    sf = SalesforceClient(settings, limiter=components.limiter(settings), lane="sync")
    try:
        entra_id = _entra_id(graph, links, target)
        state = read_entra_user(graph, entra_id)
        preview = state.enabled
        if preview and not dry_run:
            raise fail(f"{state.upn or entra_id} is enabled in Entra: disable or delete the user there first (idsync "
                       "would reactivate a user Entra still enables); `--dry-run` previews the offboarding",
                       EXIT_UNAVAILABLE)
        planned_state = EntraState(DISABLED, state.upn) if preview else state
        mapping = current_mapping(settings)
        if mapping is None:
            from shared.mapping import Mapping

            mapping = Mapping()
        inputs = read_offboarding(sf, graph, links, grants, mapping, entra_id, state=planned_state)
        plan = offboarding_plan(inputs.leaver, inputs.records, inputs.directory, mapping, licences=inputs.licences)
    finally:
        sf.close()
        graph.close()

    if dry_run:
        if as_json:
            typer.echo(json.dumps({**plan.to_dict(), "dry_run": True, "preview": preview}, indent=2))
            return
        if preview:
            console.print(f"{state.upn or entra_id} is enabled in Entra: this is what disabling them would do.",
                          style="yellow", markup=False)
        plan.render(console)
        return
    result = _execute(settings, redis, entra_id, wait)
    if as_json:
        typer.echo(json.dumps({"plan": plan.to_dict(), "result": result}, indent=2, default=str))
        return
    plan.render(console)
    _print_result(result)


def _execute(settings: Any, redis: Any, entra_id: str, wait: float) -> dict[str, Any]:
    """Publish the revocation and wait for its outcome and the transfer's (matched by correlation id)."""
    from shared import audit as audit_mod
    from shared.dispatch import publish
    from shared.events import EventKind, EventSource, IdentityEvent

    event = IdentityEvent(kind=EventKind.USER_DISABLED, source=EventSource.OPERATOR,
                          tenant=settings.graph_tenant_id or "", object_id=entra_id)
    publish(components.celery_app(settings), event, "revocation.revoke_user")
    deadline = time.monotonic() + wait
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for record in audit_mod.recent(redis, 2000):
            if record.get("correlation_id") == event.correlation_id and record["action"] in (
                    "revoke", "transfer_ownership"):
                found.setdefault(record["action"], record)
        revoke = found.get("revoke")
        if revoke is not None and (revoke["outcome"] in ("frozen_leave_of_absence", "no_salesforce_user")
                                   or "transfer_ownership" in found):
            return {"correlation_id": event.correlation_id, **found}
        time.sleep(0.2)
    raise fail(f"the workers did not finish within {wait:g} s (are they running? `idsync status`); the offboarding "
               f"stays queued (correlation id {event.correlation_id})", EXIT_UNAVAILABLE)


def _print_result(result: dict[str, Any]) -> None:
    revoke = result.get("revoke") or {}
    console.print(f"revocation: {revoke.get('outcome')}", markup=False)
    transfer = result.get("transfer_ownership")
    if transfer is None:
        return
    detail = transfer.get("detail") or {}
    moved = detail.get("moved") or {}
    console.print(f"ownership transfer: {transfer['outcome']}; moved "
                  + (", ".join(f"{n} {o}" for o, n in sorted(moved.items())) or "nothing")
                  + (f"; {detail.get('unplaced')} not placeable (idsync review show {detail.get('review_id')})"
                     if detail.get("unplaced") else ""), markup=False)
