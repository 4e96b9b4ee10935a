"""Can a report be written at this path? Asked before a command does its work, not after.

Every command that writes a file the user names (`idsync reconcile --report`, `idsync access report --output`,
`idsync audit report|export --output`) checks it first: a known extension, an existing directory it may write in,
and not a directory itself. Nothing is created here, a missing directory included: a typo in a path is answered in
one line before a reconciliation applies anything, instead of after, and does not leave a new directory behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class OutputPathError(ValueError):
    """The file cannot be written there; the message names the option, the path and what is wrong."""


def output_problem(path: Path, formats: Sequence[str] | None = None) -> str | None:
    """What stops a file being written at `path` (None: nothing). `formats`: the extensions allowed (lower case,
    with the dot), None for any."""
    if formats is not None and path.suffix.lower() not in formats:
        return f"the format comes from the extension: {', '.join(formats)}"
    if path.is_dir():
        return "is a directory; give a file name in it"
    parent = path.parent
    if not parent.is_dir():
        existing = next((p for p in parent.parents if p.exists()), None) if not parent.exists() else parent
        if existing is not None and not existing.is_dir():
            return f"{existing} is a file, not a directory"
        return f"the directory {parent} does not exist (create it first)"
    if path.exists():
        if not os.access(path, os.W_OK):
            return f"{path} is not writable (permission denied)"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create a file in {parent} (permission denied)"
    return None


def check_output(path: Path, option: str, formats: Sequence[str] | None = None) -> None:
    """Raise OutputPathError ("--report PATH: what is wrong") unless a file can be written at `path`."""
    problem = output_problem(path, formats)
    if problem is not None:
        raise OutputPathError(f"{option} {path}: {problem}")
