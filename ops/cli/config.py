"""`idsync config`: every effective setting, secrets masked, and where each value came from.

Why: settings are layered (environment > `.env` > `var/run.env` > `var/sandbox.env`, see
shared/settings_sources.py), and "which file set this?" is the first question when a deployment talks to the wrong
place. Like `git config --show-origin`, each line names its source: `env`, `.env:LINE`, `var/run.env:LINE`,
`var/sandbox.env:LINE` or `default`. Values are shown even when they are invalid, so the bad one can be found; the
problem is then reported as usual (one line, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from ops.cli.app import app
from ops.cli.errors import redacted_url
from shared.settings import (
    Settings,
    SettingsError,
    deployment_problems,
    gather_layers,
    settings_from,
    unknown_name_warnings,
)
from shared.settings_sources import Layers

MASK = "********"
DEFAULT = "default"


def _is_secret(field: str) -> bool:
    annotation = Settings.model_fields[field].annotation
    return annotation is SecretStr or "SecretStr" in str(annotation)


def _shown(field: str, value: Any) -> Any:
    """A value as printed: secrets masked (set or not is still visible), URLs without passwords, JSON-friendly."""
    if value is None:
        return None
    if _is_secret(field):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return redacted_url(value)
    return value


def _rows(layers: Layers, settings: Settings | None) -> list[tuple[str, Any, str]]:
    """(IDSYNC_NAME, shown value, origin) for every setting, in the model's order."""
    rows = []
    for field, info in Settings.model_fields.items():
        name = f"IDSYNC_{field.upper()}"
        sourced = layers.values.get(name)
        if settings is not None:
            value = getattr(settings, field)
        else:  # invalid settings: show what was written, so the operator can find the bad value
            value = sourced.value if sourced else info.default
        rows.append((name, _shown(field, value), sourced.origin if sourced else DEFAULT))
    return rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _tenant(settings: Settings | None, layers: Layers) -> str:
    if settings is None:
        return "unknown (invalid settings)"
    if settings.sandbox_mode:
        source = f" ({layers.sandbox_file})" if layers.sandbox_file else ""
        return f"sandbox{source}"
    if settings.tenant_configured:
        return "real tenant"
    return "none (`idsync run` starts the sandbox)"


@app.command("config")
def config(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Show every effective setting (secrets masked) and where it came from: env, .env:LINE, var/..., default."""
    layers = gather_layers()
    error: SettingsError | None = None
    try:
        settings: Settings | None = settings_from(layers)
    except SettingsError as err:
        settings, error = None, err
    problems = deployment_problems(settings) if settings is not None else []
    warnings = unknown_name_warnings(layers)
    rows = _rows(layers, settings)
    if as_json:
        typer.echo(json.dumps({
            "tenant": _tenant(settings, layers),
            "files": [str(p) for p in layers.files],
            "settings": {name: {"value": value, "origin": origin} for name, value, origin in rows},
            "problems": [str(error)] if error else problems,
            "warnings": warnings,
        }, indent=2, default=str))
    else:
        width = max(len(origin) for _, _, origin in rows)
        for name, value, origin in rows:
            typer.echo(f"{origin:<{width}}  {name}={_text(value)}")
        typer.echo(f"# tenant: {_tenant(settings, layers)}; files read: {', '.join(map(str, layers.files)) or 'none'}")
        for line in warnings:
            typer.echo(line, err=True)
    if error is not None:
        raise error
    if problems:
        raise SettingsError(problems[0])
