"""`var/run.env`: what a running `idsync run` tells the other `idsync` commands started in the same directory.

`idsync status` or `idsync dlq list` in a second terminal must find the embedded Redis and the sandbox without
the operator copying URLs around; settings already read this file (see shared/settings_sources.py, which also reads
it back for others: `read_env_values`), so writing it is enough.
The file holds the embedded Redis's password (inside IDSYNC_REDIS_URL), so it is private to its owner (0600).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def write_private_file(path: Path, text: str) -> None:
    """Write `text` atomically (a reader never sees half a file) and private (0600) from the first byte.

    `mkstemp` creates the temporary file with mode 0600 whatever the umask, so the secret is never readable by
    others, not even between creating and renaming it; `os.replace` then swaps it in.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write a dotenv file atomically and private (it may hold secrets)."""
    write_private_file(path, "".join(f"{key}={_quote(value)}\n" for key, value in values.items()))


def redacted_url(url: str) -> str:
    """The URL with its password (and user) replaced by `***`, for anything a person or a log will read."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f":***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_.:/@%+=,[]" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
