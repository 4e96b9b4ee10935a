"""The mapping the offboarding steps run with, in a worker or a CLI process.

TODO(lead, issue 7 I/O): replace with `shared.provisioning.mapping_store.MappingStore` (hot reload, status in Redis)
once it is on main; this keeps its file choice: `IDSYNC_MAPPING_FILE`, else the shipped examples/mapping.yaml in
sandbox mode, else none. A file that does not load leaves the last good mapping in use (and is logged): a
half-edited file must never stop leavers from being offboarded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from shared.logging import get_logger
from shared.mapping import Mapping, MappingError, load_mapping

log = get_logger("idsync.offboarding")

EXAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"

_lock = threading.Lock()
_cache: dict[Path, tuple[int, Mapping]] = {}


def mapping_path(settings: Any) -> Path | None:
    if getattr(settings, "mapping_file", None):
        return Path(settings.mapping_file)
    if getattr(settings, "sandbox_mode", False) and EXAMPLE_MAPPING.exists():
        return EXAMPLE_MAPPING
    return None


def current_mapping(settings: Any) -> Mapping | None:
    """The mapping to offboard with, or None when no file is configured (records then stay with leavers)."""
    path = mapping_path(settings)
    if path is None:
        return None
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as err:
        log.error("offboarding_mapping_unreadable", path=str(path), error=err.strerror or str(err))
        return _last_good(path)
    with _lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            mapping = load_mapping(path)
        except MappingError as err:
            log.error("offboarding_mapping_invalid", path=str(path), problems="; ".join(map(str, err.problems[:5])))
            return cached[1] if cached is not None else None
        _cache[path] = (mtime, mapping)
        return mapping


def _last_good(path: Path) -> Mapping | None:
    with _lock:
        cached = _cache.get(path)
    return cached[1] if cached is not None else None
