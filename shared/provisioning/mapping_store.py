"""The mapping a running process uses: loaded once, reloaded when the file changes or on SIGHUP, atomically.

Why "last good mapping wins": an admin saving a half-edited file must not stop provisioning, and must never make a
worker crash or apply a broken rule. A reload parses the whole file first; only a mapping that loads replaces the
current one (a single reference swap), otherwise the old one stays, the problem is logged once per file version,
counted (`idsync_mapping_reload_failures`) and recorded in Redis for `idsync status`.

Which file: `IDSYNC_MAPPING_FILE`; unset in sandbox mode, the shipped `examples/mapping.yaml`; unset with a real
tenant, none: joiners and movers are off (leavers still work) and status says so.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.logging import get_logger
from shared.mapping import Mapping
from shared.mapping.loader import MappingError, load_mapping

log = get_logger("idsync.mapping")

STATUS_KEY = "idsync:mapping:status"
#: How often a process looks at the file's modification time (a stat, no read unless it changed).
CHECK_INTERVAL_S = 2.0
#: The demo mapping shipped with the repository, used in sandbox mode when no file is configured.
EXAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"


class NoMapping(Exception):  # noqa: N818 - a state, reported to the operator, not a failure of the code
    """No mapping file is configured (or the configured one never loaded): joiners and movers are off."""


def mapping_path(settings: Any) -> Path | None:
    """The file this deployment maps with, or None when joiners and movers are not configured."""
    if settings.mapping_file:
        return Path(settings.mapping_file)
    if getattr(settings, "sandbox_mode", False) and EXAMPLE_MAPPING.exists():
        return EXAMPLE_MAPPING  # the bundled sandbox: the demo mapping
    return None


@dataclass(frozen=True)
class Loaded:
    mapping: Mapping
    path: Path
    mtime_ns: int
    loaded_at: float


class MappingStore:
    """Process-wide holder of the current mapping (thread-safe; one per process)."""

    def __init__(self, path: Path | None, redis: Any = None, *, check_interval_s: float = CHECK_INTERVAL_S) -> None:
        self.path = path
        self.redis = redis
        self.check_interval_s = check_interval_s
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._reload_requested = False
        self._failed_version: int | None = None
        self.last_error: str | None = None

    # --- reading -----------------------------------------------------------------------------------------------
    def current(self) -> Mapping:
        """The mapping to plan with now; reloads first if the file changed (or SIGHUP asked). Raises `NoMapping`."""
        if self.path is None:
            raise NoMapping("no mapping file: set IDSYNC_MAPPING_FILE (docs/mapping.md) to provision joiners and "
                            "movers")
        now = time.monotonic()
        if self._loaded is None or self._reload_requested or now - self._checked_at >= self.check_interval_s:
            self._checked_at = now
            self._maybe_reload()
        loaded = self._loaded
        if loaded is None:
            raise NoMapping(f"the mapping file {self.path} does not load: {self.last_error}")
        return loaded.mapping

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    def request_reload(self) -> None:
        """Reload on the next `current()` even if the modification time did not change (SIGHUP)."""
        self._reload_requested = True

    def install_sighup(self) -> None:
        """`kill -HUP <pid>` reloads the mapping; only in the main thread (where Python delivers signals)."""
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # --- loading -----------------------------------------------------------------------------------------------
    def _maybe_reload(self) -> None:
        assert self.path is not None
        with self._lock:
            forced, self._reload_requested = self._reload_requested, False
            try:
                mtime = os.stat(self.path).st_mtime_ns
            except OSError as err:
                self._failed(f"cannot read {self.path}: {err.strerror or err}", None)
                return
            if not forced and self._loaded is not None and self._loaded.mtime_ns == mtime:
                return
            if not forced and self._failed_version == mtime:
                return  # this broken version was reported already
            try:
                mapping = load_mapping(self.path)
            except MappingError as err:
                self._failed("; ".join(str(p) for p in err.problems[:5]), mtime)
                return
            previous = self._loaded
            self._loaded = Loaded(mapping, self.path, mtime, time.time())
            self._failed_version = None
            self.last_error = None
            # a first load is routine (debug); a reload is news for whoever edits the file
            (log.info if previous is not None else log.debug)("mapping_loaded", path=str(self.path),
                                                              reloaded=previous is not None)
            self._record()

    def _failed(self, message: str, version: int | None) -> None:
        from shared.metrics import MAPPING_RELOAD_FAILURES

        self._failed_version = version
        self.last_error = message
        MAPPING_RELOAD_FAILURES.inc()
        kept = "keeping the last good mapping" if self._loaded is not None else "joiners and movers wait for a fix"
        log.error("mapping_reload_failed", path=str(self.path), problems=message[:2000], outcome=kept)
        self._record()

    def _record(self) -> None:
        """What `idsync status` shows: which file, when it last loaded, and the last refused edit."""
        if self.redis is None:
            return
        status = {
            "path": str(self.path),
            "loaded_at": self._loaded.loaded_at if self._loaded else None,
            "last_error": self.last_error,
            "error_at": time.time() if self.last_error else None,
            "pid": os.getpid(),
        }
        try:
            self.redis.set(STATUS_KEY, json.dumps(status))
        except Exception as err:  # noqa: BLE001 - status is informative; never fail planning for it
            log.warning("mapping_status_not_recorded", error=type(err).__name__)


def mapping_status(redis: Any) -> dict[str, Any] | None:
    raw = redis.get(STATUS_KEY)
    return json.loads(raw) if raw else None
