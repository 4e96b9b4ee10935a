"""Write and read the dotenv file that hands the sandbox's URLs and credentials to idsync and to tests.

The file is the hand-off between `python -m sandbox` and whatever waits for it (a test, `make run`, a demo script),
so it must never be seen half-written: it is written to a temporary file in the same directory and renamed into
place, and it holds secrets, so it is created with mode 0600.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

_BARE = re.compile(r"^[A-Za-z0-9_./:@%+,=\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(value: str) -> str:
    """Quote so python-dotenv (and, barring a `'` or `\\` in the value, a POSIX shell) reads it back unchanged."""
    if "\n" in value or "\r" in value:
        raise ValueError("env file values cannot contain line breaks")
    if _BARE.match(value):
        return value
    if "'" not in value and "\\" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_env(env: Mapping[str, str], *, header: str | None = None) -> str:
    lines = [f"# {line}" for line in (header or "").splitlines()]
    for key, value in env.items():
        if not _KEY.match(key):
            raise ValueError(f"not a valid variable name: {key!r}")
        lines.append(f"{key}={_quote(str(value))}")
    return "\n".join(lines) + "\n"


def write_env_file(path: Path | str, env: Mapping[str, str], *, header: str | None = None) -> Path:
    """Atomically replace `path` with `env` as KEY=value lines, mode 0600; returns the absolute path."""
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    if header is None:
        header = f"written by `python -m sandbox` at {datetime.now(UTC).isoformat(timespec='seconds')}"
    text = render_env(env, header=header)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem allows opening a directory
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return target
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return target


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def read_env_file(path: Path | str) -> dict[str, str]:
    """Read back what `write_env_file` wrote (comments and blank lines skipped, `export ` prefix tolerated)."""
    env: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = _unquote(value)
    return env
