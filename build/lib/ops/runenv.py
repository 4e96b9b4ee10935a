"""`var/run.env`: what a running `idsync run` tells the other `idsync` commands started in the same directory.

`idsync status` or `idsync dlq list` in a second terminal must find the embedded Redis and the sandbox without
the operator copying URLs around; settings already read this file (see shared/settings.py), so writing it is enough.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write a dotenv file atomically (never a half-written file for a reader) and private (it may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            for key, value in values.items():
                fh.write(f"{key}={_quote(value)}\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_.:/@%+=,[]" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
