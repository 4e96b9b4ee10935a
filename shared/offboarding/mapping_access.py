"""The mapping the offboarding steps run with, in a worker or a CLI process: the same `MappingStore` (hot reload,
last good mapping kept) and the same file choice as joiners and movers (`IDSYNC_MAPPING_FILE`, else the shipped
examples/mapping.yaml in sandbox mode, else none: records then stay with leavers)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from shared.mapping import Mapping
from shared.provisioning.mapping_store import EXAMPLE_MAPPING, MappingStore, NoMapping, mapping_path

__all__ = ["EXAMPLE_MAPPING", "current_mapping", "mapping_path"]

_lock = threading.Lock()
_stores: dict[Path, MappingStore] = {}


def current_mapping(settings: Any) -> Mapping | None:
    """The mapping to offboard with, or None when none is configured or the file never loaded."""
    path = mapping_path(settings)
    if path is None:
        return None
    with _lock:
        store = _stores.setdefault(path, MappingStore(path))
    try:
        return store.current()
    except NoMapping:
        return None
