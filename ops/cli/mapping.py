"""`idsync mapping ...`: check a mapping file, print its JSON Schema.

`check` prints every problem as `FILE:LINE:COL: message (fix: ...)` (the form editors and CI annotate), one per line,
and exits 1 when there is any. With a tenant configured (or a running sandbox) it also checks every name — profiles,
roles, permission sets and groups, licences, public groups, queues, User fields, Entra groups, and the
`offboarding:` section's users, queues and the objects they take — against the org and the tenant
(`shared.engine.check_names`); `--offline` skips that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.cli.app import app

mapping_app = typer.Typer(help="Check the mapping file and print its schema.", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")


def _online_problems(text: str, file: Path) -> tuple[list[Any], str]:
    """Problems with names, checked against the org and the tenant; (problems, a note about what was checked)."""
    from shared.engine import check_names
    from shared.engine.names import entra_group_references
    from shared.mapping.loader import parse_mapping_text
    from shared.provisioning.catalog_reader import read_catalog
    from shared.salesforce_client import SalesforceClient
    from shared.settings import SettingsError, checked_settings

    try:
        settings = checked_settings()
    except SettingsError:
        return [], "names not checked: the settings are incomplete (`idsync config`)"
    if not settings.tenant_configured:
        return [], "names not checked: no tenant configured (they are checked with IDSYNC_GRAPH_* and IDSYNC_SF_*)"
    from ops import components

    mapping = parse_mapping_text(text, str(file))
    sf = SalesforceClient(settings)
    graph = components.graph_client(settings)
    try:
        catalog = read_catalog(sf)
        refs = list(dict.fromkeys(name for _path, name in entra_group_references(mapping)))
        found = graph.groups_by_ids([r for r in refs if _is_object_id(r)])
        by_name = graph.groups_by_name([r for r in refs if not _is_object_id(r)])
        known = set(found) | {name for name, groups in by_name.items() if groups}
    finally:
        sf.close()
        graph.close()
    return check_names(mapping, catalog, known), "names checked against the org and the tenant"


def _is_object_id(ref: str) -> bool:
    import re

    return bool(re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", ref))


@mapping_app.command("check")
def mapping_check(
    file: Annotated[Path, typer.Argument(help="the mapping file (YAML)")],
    offline: Annotated[bool, typer.Option("--offline", help="do not check names against the org and tenant")] = False,
    org: Annotated[bool, typer.Option("--org", help="check names against the org and tenant (the default when "
                                                     "credentials are configured)")] = False,
) -> None:
    """Validate a mapping file: every problem with its line, column and fix."""
    from shared.mapping import check_mapping_text

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        typer.echo(f"idsync: cannot read {file}: {reason}", err=True)
        raise typer.Exit(2) from None
    problems = check_mapping_text(text, str(file))
    note = "names not checked (--offline)" if offline else ""
    if not problems and not offline:
        online, note = _online_problems(text, file)
        problems = list(online)
        if note.startswith("names checked") or org:
            problems += _org_problems(text, str(file))
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok" + (f" ({note})" if note else ""))


@mapping_app.command("schema")
def mapping_schema() -> None:
    """Print the JSON Schema of the mapping file (for editor completion, e.g. yaml-language-server)."""
    from shared.mapping import Mapping

    schema = Mapping.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "idsync mapping"
    typer.echo(json.dumps(schema, indent=2))


def _org_problems(text: str, filename: str) -> list[Any]:
    """The names of a valid mapping checked against the org and the tenant."""
    from ops.cli.app import settings
    from shared.graph_client import GraphClient
    from shared.mapping import parse_mapping_text
    from shared.offboarding.names import check_offboarding_names, read_org_facts
    from shared.salesforce_client import SalesforceClient

    current = settings()
    mapping = parse_mapping_text(text, filename)
    sf, graph = SalesforceClient(current), GraphClient(current)
    try:
        return list(check_offboarding_names(mapping, read_org_facts(sf, mapping, graph)))
    finally:
        sf.close()
        graph.close()
