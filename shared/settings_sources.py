"""Where each setting's value comes from: the process environment, `.env`, `var/run.env`, `var/sandbox.env`.

Why a layered loader of our own instead of pydantic-settings' `env_file` tuple: the files do not have equal rights.
A leftover `var/sandbox.env` (written by any earlier `make run`) must never complete or override a tenant the
operator configured, so it is read only when no tenant setting at all comes from a higher layer; and `idsync config`
must say which layer (and which line) won, like `git config --show-origin`. The rule, highest first:

    process environment  >  .env  >  {var_dir}/run.env  >  {var_dir}/sandbox.env (only when no tenant is configured)

`var_dir` is `IDSYNC_VAR_DIR` from the environment or `.env` (default `var`), relative to the working directory.
An empty value counts as unset, so a `.env` template with blank lines does not mask a lower layer.

python-dotenv skips a line it cannot parse with a log warning nobody sees; here a malformed line is an error
naming the file and line, because a silently dropped `IDSYNC_WEBHOOK_CLIENT_STATE` is a security hole.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "IDSYNC_"
#: Names in our namespace that are not settings: the listening URLs `idsync run` writes to run.env for people and
#: scripts, the CLI's own switch for showing tracebacks, and the test suite's own variables (`IDSYNC_TEST_*`, e.g.
#: the PostgreSQL server `.ci/run` names), which every command a test runs inherits.
NON_SETTING_NAMES = ("IDSYNC_RUN_", "IDSYNC_TRACEBACK", "IDSYNC_TEST_")
#: The settings that describe a tenant. Any of them from a higher layer means "the operator configured a tenant",
#: and the sandbox's file is then ignored entirely (never merged into a half-configured real tenant).
TENANT_NAMES = (
    "IDSYNC_GRAPH_AUTHORITY",
    "IDSYNC_GRAPH_URL",
    "IDSYNC_GRAPH_TENANT_ID",
    "IDSYNC_GRAPH_CLIENT_ID",
    "IDSYNC_GRAPH_CLIENT_SECRET",
    "IDSYNC_SF_URL",
    "IDSYNC_SF_CLIENT_ID",
    "IDSYNC_SF_CLIENT_SECRET",
)
ENV = "env"
DEFAULT_VAR_DIR = "var"


class EnvFileError(ValueError):
    """A line of a dotenv file that cannot be parsed; the message names the file and the line."""


@dataclass(frozen=True)
class Sourced:
    """One raw value and where it came from: `env`, `.env:12`, `var/run.env:3`, `argument`."""

    value: str
    origin: str


@dataclass
class Layers:
    """The winning raw value of every `IDSYNC_*` name, plus what `idsync config` and the typo warning need."""

    values: dict[str, Sourced] = field(default_factory=dict)
    #: Every `IDSYNC_*` name the operator wrote (environment and `.env`), for "did you mean" warnings.
    written: list[Sourced] = field(default_factory=list)
    #: The env files that exist and were read, in precedence order.
    files: list[Path] = field(default_factory=list)
    sandbox_file: Path | None = None


def read_env_file(path: Path, label: str | None = None) -> dict[str, Sourced]:
    """`KEY -> Sourced(value, "label:line")` for every assignment in a dotenv file; {} when it does not exist."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise EnvFileError(f"{label}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    lines: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise EnvFileError(
                f"{label}:{binding.original.line}: cannot parse {binding.original.string.strip()[:60]!r} "
                "(expected NAME=value)"
            )
        if binding.key is not None:
            lines[binding.key] = binding.original.line
    # Values through python-dotenv itself (quotes, escapes, ${VAR} expansion), so they mean what they always meant.
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {
        key: Sourced(value, f"{label}:{lines.get(key, 0)}")
        for key, value in values.items()
        if value is not None
    }


def read_env_values(path: Path) -> dict[str, str]:
    """The values of a dotenv file without their origins (`read_env_file` reads it); {} when it does not exist."""
    return {key: sourced.value for key, sourced in read_env_file(path).items()}


def _ours(values: Mapping[str, Sourced]) -> dict[str, Sourced]:
    """Only `IDSYNC_*` names (case-insensitive, as pydantic-settings matches them), upper-cased; empty = unset."""
    return {k.upper(): v for k, v in values.items() if k.upper().startswith(ENV_PREFIX) and v.value != ""}


def is_setting_name(name: str, known: Iterable[str]) -> bool:
    return name in set(known) or name.startswith(NON_SETTING_NAMES)


def gather(
    environ: Mapping[str, str] | None = None,
    *,
    env_files: Sequence[Path | str] | None = None,
    layered: bool = True,
    given: Mapping[str, object] | None = None,
) -> Layers:
    """Collect raw values by the precedence rule in the module docstring.

    `layered=False` reads the environment plus exactly `env_files` (None: no file at all), for tests and for
    `idsync run`, which must not inherit the files of a previous run. `given` names settings already supplied by the
    caller by field name (they outrank every layer, so they also count as "a tenant is configured").
    """
    given = {f"{ENV_PREFIX}{k.upper()}": v for k, v in (given or {}).items() if v is not None and v != ""}
    environ = os.environ if environ is None else environ
    layers = Layers()
    env_layer = _ours({k: Sourced(v, ENV) for k, v in environ.items()})
    layers.written.extend(Sourced(name, ENV) for name in env_layer)
    stack: list[dict[str, Sourced]] = [env_layer]
    read: list[Path] = []
    if layered:
        dot_env = Path(".env")
        read.append(dot_env)
        dot = _ours(read_env_file(dot_env, ".env"))
        layers.written.extend(Sourced(name, src.origin) for name, src in dot.items())
        stack.append(dot)
        var_dir = Path(str(given.get("IDSYNC_VAR_DIR") or _first("IDSYNC_VAR_DIR", stack) or DEFAULT_VAR_DIR))
        run_env = var_dir / "run.env"
        read.append(run_env)
        stack.append(_ours(read_env_file(run_env)))
        tenant_given = set(given) | {n for layer in stack for n in layer}
        if not tenant_given.intersection(TENANT_NAMES):
            sandbox_env = var_dir / "sandbox.env"
            read.append(sandbox_env)
            sandbox = _ours(read_env_file(sandbox_env))
            if sandbox:
                stack.append(sandbox)
                layers.sandbox_file = sandbox_env
    else:
        for raw in env_files or ():
            path = Path(raw)
            read.append(path)
            values = _ours(read_env_file(path))
            layers.written.extend(Sourced(name, src.origin) for name, src in values.items())
            stack.append(values)
    for layer in reversed(stack):  # lowest first, so higher layers overwrite
        layers.values.update(layer)
    layers.files = [p for p in read if p.is_file()]
    return layers


def _first(name: str, stack: Sequence[Mapping[str, Sourced]]) -> str | None:
    for layer in stack:
        if name in layer:
            return layer[name].value
    return None
