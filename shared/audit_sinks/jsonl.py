"""The default sink: the chain as JSON lines in rotated files, one entry a line, `audit-<first seq>.jsonl`.

Why files named by their first sequence number: the trail's order is the files' order with no index to trust, a
removed file shows up as a gap in `idsync audit verify`, and rotation never renames (a shipper such as Filebeat or
Vector tailing the directory never sees a file change name under it). Each batch is fsynced before the writer moves
the sink's cursor; after a crash between the two, the entries already on disk are skipped (by seq), not repeated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.audit_events import canonical_json

_NAME = re.compile(r"^audit-(\d{12})\.jsonl$")


def trail_files(directory: Path) -> list[Path]:
    """The trail's files in order (by the first sequence number in their name)."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_lines(directory: Path) -> Iterator[str]:
    """Every line of the trail, in order, across rotated files."""
    for path in trail_files(directory):
        with path.open(encoding="utf-8") as fh:
            yield from fh


def _last_seq(path: Path) -> int:
    """The sequence number on the file's last complete line (0 if none): read backwards from the end."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        chunk = b""
        pos = size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + chunk
            lines = [line for line in chunk.split(b"\n") if line.strip()]
            if len(lines) >= 2 or (lines and pos == 0):
                for line in reversed(lines):
                    try:
                        return int(json.loads(line)["seq"])
                    except (ValueError, KeyError, TypeError):
                        continue
                return 0
    return 0


def _drop_torn_line(path: Path) -> None:
    """A crash mid-write can leave a last line without its newline: cut it, it is delivered again."""
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            cut = fh.read(step).rfind(b"\n")
            if cut >= 0:
                fh.truncate(pos + cut + 1)
                return
        fh.truncate(0)


class JsonlSink:
    name = "jsonl"

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._current: Path | None = None
        self._last_seq: int | None = None

    def _open_state(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        files = trail_files(self.directory)
        self._current = files[-1] if files else None
        if self._current is not None:
            _drop_torn_line(self._current)
        self._last_seq = _last_seq(self._current) if self._current else 0

    def deliver(self, entries: list[dict[str, Any]]) -> None:
        if self._last_seq is None:
            self._open_state()
        assert self._last_seq is not None
        fresh = [e for e in entries if int(e["seq"]) > self._last_seq]
        if not fresh:
            return
        if self._current is None or self._current.stat().st_size >= self.max_bytes:
            self._current = self.directory / f"audit-{int(fresh[0]['seq']):012d}.jsonl"
        new_file = not self._current.exists()
        data = "".join(canonical_json(e) + "\n" for e in fresh).encode("utf-8")
        fd = os.open(self._current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._last_seq = int(fresh[-1]["seq"])

    def close(self) -> None:
        self._last_seq = None
