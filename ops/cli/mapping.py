"""`idsync mapping ...`: check a mapping file, print its JSON Schema.

`check` prints every problem as `FILE:LINE:COL: message (fix: ...)` (the form editors and CI annotate), one per line,
and exits 1 when there is any. `--org` also checks names against the org and the tenant (with the configured
credentials); today that covers the `offboarding:` section (users, queues and the objects they take, public groups,
`open` filters, leave-of-absence groups). TODO(lead): the rest of the mapping's names (`shared.engine.check_names`)
once the catalog reader is on main.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.cli.app import app

mapping_app = typer.Typer(help="Check the mapping file and print its schema.", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")


@mapping_app.command("check")
def mapping_check(
    file: Annotated[Path, typer.Argument(help="the mapping file (YAML)")],
    org: Annotated[bool, typer.Option("--org", help="also check names against the org and tenant (credentials)")]
    = False,
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
    if org and not problems:
        problems = _org_problems(text, str(file))
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok")


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
