"""The mapping file a running process uses: the CRM workers' view of the one `MappingStore` (hot reload, the last
good mapping kept when an edit does not load). Without a mapping file the CRM sections are simply off (an empty
mapping), rather than an error: guests and requests are optional features."""

from __future__ import annotations

import threading
from pathlib import Path

from shared.mapping import Mapping
from shared.provisioning.mapping_store import EXAMPLE_MAPPING, MappingStore, NoMapping
from shared.provisioning.mapping_store import mapping_path as _mapping_path
from shared.settings import Settings

DEMO_MAPPING = EXAMPLE_MAPPING

_lock = threading.Lock()
_stores: dict[Path, MappingStore] = {}


def mapping_path(settings: Settings) -> Path | None:
    return _mapping_path(settings)


def current_mapping(settings: Settings) -> Mapping:
    """The mapping in force (an empty one when no file is configured or it never loaded)."""
    path = mapping_path(settings)
    if path is None:
        return Mapping()
    with _lock:
        store = _stores.setdefault(path, MappingStore(path))
    try:
        return store.current()
    except NoMapping:
        return Mapping()
