"""Runtime-tunable behaviour and fault injection, changed through `PATCH /_sandbox/config` and `/_sandbox/faults`.

Values are read on every request (never cached at start-up) so a change takes effect at once for new requests
and newly issued tokens.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

DEFAULT_CONFIG: dict[str, dict[str, Any]] = {
    "graph": {
        "ru_per_10s": 8000,  # app+tenant resource units per 10 s, a large (>500 users) tenant
        "write_per_150s": 3000,
        "delta_page_size": 200,  # server-chosen users/delta page size
        "delta_duplicate_rate": 0.0,  # share of delta items repeated on a later page of the same round
        "delta_replay_rate": 0.0,  # share of items from the previous round replayed in the next
        "delta_token_lifetime_s": 7 * 24 * 3600,
        "delta_expired_code": "syncStateNotFound",
        "group_members_page_size": 100,  # members@delta slice per page (large groups span pages)
        "subscription_quota_per_app": 100,
        "subscription_max_minutes": 41760,
        "notification_timeout_s": 3.0,
        "notification_retry_window_s": 4 * 3600,
        "notification_retry_base_s": 1.0,
        "validation_timeout_s": 10.0,
        "token_lifetime_s": 3599,
        "notifications_per_change": 1,  # >1: several `updated` per change, like real Graph
        # change-notification delivery details (webhook delivery, lifecycle), owned by sandbox/graph/notifier.py
        "notification_batch_window_ms": 50,  # pending notifications for one URL within this window share a value[]
        "notification_max_batch": 50,  # most items in one delivery POST
        "notification_retry_max_delay_s": 600,  # backoff cap between retries
        "notification_slow_ms": 2900,  # a response slower than this counts as slow
        "notification_slow_min_count": 100,  # notifications needed before an endpoint is judged
        "notification_throttle_slow_pct": 10,  # >= this share slow: endpoint throttled (delayed)
        "notification_drop_slow_pct": 15,  # >= this share slow: notifications dropped
        "notification_throttle_delay_s": 600,  # throttled endpoints: delivery delay and retry interval
        "notification_slow_window_s": 600,  # slow/total counters are flushed this often
        "lifecycle_reauth_interval_s": 900,  # repeat reauthorizationRequired this often until reauthorized
    },
    "salesforce": {
        "daily_api_limit": 100_000,
        "session_lifetime_s": 7200,
        "query_batch_size": 2000,
        # Bulk API 2.0 query results: rows per page when the client sends no maxRecords (Salesforce documents no
        # number, only "a default value based on the service")
        "bulk_query_default_max_records": 100_000,
        "bulk_query_processing_s": 0.0,  # sandbox-clock seconds a query job stays InProgress after its snapshot
        "other_org_usernames": ["taken@otherorg.example.com"],
        "default_api_version": "62.0",
        "allow_inactive_owner_assignment": False,  # org setting "Update Records with Inactive Owners"
        # validation rules: {"object", "field", "pattern" (regex searched in the value) or "blank": true, "message",
        # "name"}, or "Object.Field=Value"; a saved record that matches fails with FIELD_CUSTOM_VALIDATION_EXCEPTION
        "validation_rules": [],
    },
}

DEFAULT_FAULTS: dict[str, dict[str, Any]] = {
    "salesforce": {
        "error_rate": 0.0,
        "error_kinds": ["503"],  # any of 503, UNABLE_TO_LOCK_ROW, timeout, reset
        "latency_ms": 0,
        "timeout_hold_s": 35,  # how long the `timeout` fault holds a request (or until the client disconnects)
        "record_lock_rate": 0.0,  # share of CRM record updates failing alone with UNABLE_TO_LOCK_ROW
    },
    "graph": {
        "throttle_rate": 0.0,  # share of requests answered 429 regardless of budget
        "throttle_retry_after_s": 2,
        "throttle_paths": [],  # path prefixes below /v1.0 (e.g. "/invitations"): throttle_rate applies only there
        "notification_drop_rate": 0.0,
        "notification_duplicate_rate": 0.0,
        "latency_ms": 0,
    },
}


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, in place; unknown top-level sections are rejected by the caller."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = value
    return target


class Tunables:
    """A thread-safe nested dict with dotted reads: `cfg.get("graph.delta_page_size")`."""

    def __init__(self, defaults: dict[str, dict[str, Any]]) -> None:
        self._defaults = defaults
        self._data = copy.deepcopy(defaults)
        self._baseline = copy.deepcopy(defaults)
        self._lock = threading.Lock()

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def set(self, dotted: str, value: Any) -> None:
        section, _, key = dotted.partition(".")
        self.patch({section: {key: value}})

    def patch(self, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a merge patch. Raises ValueError naming an unknown key, so typos don't pass silently."""
        for section, values in patch.items():
            if section not in self._defaults:
                raise ValueError(f"unknown section {section!r}")
            if not isinstance(values, dict):
                raise ValueError(f"{section!r} must be an object")
            for key in values:
                if key not in self._defaults[section]:
                    raise ValueError(f"unknown setting {section}.{key}")
        with self._lock:
            merge_patch(self._data, copy.deepcopy(patch))
            return copy.deepcopy(self._data)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._data)

    def mark_baseline(self) -> None:
        """Remember the current values (the defaults plus `--set`/`--fault` at start) as what `reset` returns to."""
        with self._lock:
            self._baseline = copy.deepcopy(self._data)

    def reset(self) -> dict[str, Any]:
        """Back to the baseline: every PATCH since the start is undone."""
        with self._lock:
            self._data = copy.deepcopy(self._baseline)
            return copy.deepcopy(self._data)
