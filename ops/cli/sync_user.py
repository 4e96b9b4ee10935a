"""`idsync sync-user UPN|objectId [--dry-run] [--json]`: one user's plan (every field and entitlement, before ->
after, and why), applied unless `--dry-run`.

It runs the same batch code as the sync lane (`shared.provisioning.batch.sync_users`) for a batch of one, in this
process: there is no second implementation to drift from what the workers do. A user the plan sends to the
revocation lane (out of scope, disabled) is published there, as the sync lane would.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from ops import components
from ops.cli.app import app, console
from ops.cli.app import settings as _settings
from ops.cli.errors import fail


def provisioning_deps(settings: Any, *, with_sender: bool) -> Any:
    """The same dependencies a sync worker builds (clients on the sync lane, mapping store, catalogue cache)."""
    from shared.provisioning.batch import SyncDeps
    from shared.provisioning.catalog_reader import CatalogCache
    from shared.provisioning.mapping_store import MappingStore, mapping_path
    from shared.salesforce_client import SalesforceClient

    redis = components.redis_client(settings)
    graph = components.graph_client(settings, lane="sync")
    sf = SalesforceClient(settings, limiter=components.limiter(settings), lane="sync")
    sender = components.celery_app(settings) if with_sender else None
    return SyncDeps(settings, redis, graph, sf, MappingStore(mapping_path(settings), redis), CatalogCache(), sender)


def resolve_user(graph: Any, key: str) -> str:
    """An object id or a UPN -> the object id (one Graph read); nobody: one line and exit 2 (bad input)."""
    found = graph.get_user(key, select=["id"])
    if found is None:
        raise fail(f"no Entra user {key!r} (give a UPN or an object id)")
    return str(found["id"])


@app.command("sync-user")
def sync_user(
    user: Annotated[str, typer.Argument(help="the user's UPN or Entra object id")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan only: write nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Plan one user with the mapping (before -> after, and why for each change) and apply it."""
    from shared.provisioning.batch import sync_users

    settings = _settings()
    deps = provisioning_deps(settings, with_sender=not dry_run)
    started = time.monotonic()
    entra_id = resolve_user(deps.graph, user)
    report = sync_users(deps, [entra_id], dry_run=dry_run)
    elapsed = time.monotonic() - started
    plan = report.plans.get(entra_id)
    outcome = report.outcomes.get(entra_id, "unknown")
    result = report.results.get(entra_id)
    if as_json:
        out: dict[str, Any] = {"entra_id": entra_id, "outcome": outcome, "dry_run": dry_run,
                               "plan": plan.to_dict() if plan else None, "salesforce_calls": report.sf_calls,
                               "seconds": round(elapsed, 3)}
        if result is not None:
            out["applied"] = [c.to_dict() for c in result.applied]
            out["failed"] = [{"change": f.change.to_dict(), "code": f.code, "message": f.message}
                             for f in result.failed]
        typer.echo(json.dumps(out, indent=2, default=str))
    else:
        if plan is not None:
            plan.render(console)
        if result is not None:
            for failure in result.failed:
                console.print(f"failed: {failure.change.kind.value} {failure.change.target}: {failure.code}: "
                              f"{failure.message}", style="red", markup=False)
        verb = "planned (dry run, nothing written)" if dry_run else "done"
        console.print(f"{verb}: {outcome} in {elapsed:.2f} s, {report.sf_calls} Salesforce calls", markup=False)
    if outcome in ("review", "retry") or (result is not None and result.failed):
        raise typer.Exit(1)
