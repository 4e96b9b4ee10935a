"""The mapping file a running process uses, re-read when it changes.

TODO(lead, issue 7): `shared/provisioning/mapping_store.py` becomes the one running mapping with hot reload; this
module's two functions should then delegate to it (the guest and request workers and the request poller call only
`mapping_path` and `current_mapping`).

Where the file is: `IDSYNC_MAPPING_FILE`; unset in sandbox mode, the shipped `examples/mapping.yaml`; unset with a
real tenant, no file (an empty mapping: the CRM sections are off). A file that stops parsing keeps the last good
mapping and logs every problem once: a typo saved in an editor must not stop the service.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from shared.logging import get_logger
from shared.mapping import Mapping, MappingError, load_mapping
from shared.settings import Settings

log = get_logger("idsync.mapping")

DEMO_MAPPING = Path(__file__).resolve().parents[1] / "examples" / "mapping.yaml"

_lock = threading.Lock()
_cache: dict[Path, tuple[int, Mapping]] = {}


def mapping_path(settings: Settings) -> Path | None:
    if settings.mapping_file is not None:
        return Path(settings.mapping_file)
    if settings.sandbox_mode or not settings.tenant_configured:
        return DEMO_MAPPING
    return None


def current_mapping(settings: Settings) -> Mapping:
    """The mapping now in the file (cached while its modification time stays the same)."""
    path = mapping_path(settings)
    if path is None:
        return Mapping()
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError as err:
        with _lock:
            kept = _cache.get(path)
        if kept is not None:
            log.warning("mapping_unreadable_kept_last", path=str(path), error=err.strerror)
            return kept[1]
        return load_mapping(path)  # raises MappingError naming the file and why it cannot be read
    with _lock:
        kept = _cache.get(path)
        if kept is not None and kept[0] == stamp:
            return kept[1]
    try:
        mapping = load_mapping(path)
    except MappingError as err:
        if kept is None:
            raise
        for problem in err.problems:
            log.error("mapping_invalid_kept_last", problem=str(problem))
        with _lock:
            _cache[path] = (stamp, kept[1])
        return kept[1]
    with _lock:
        _cache[path] = (stamp, mapping)
    return mapping
