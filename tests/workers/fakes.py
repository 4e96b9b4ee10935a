"""In-memory stand-ins for GraphClient and SalesforceClient with the same method signatures.

They record every call in order (so tests can say "froze, then deactivated") and can be told to fail: `fail(method,
exc, times)` makes the next `times` calls of `method` raise `exc`; `on(method, action)` runs `action()` once, when
`method` is next called (to make something happen "meanwhile", e.g. a revocation landing mid-task). Writes to a
Salesforce user id that does not exist raise `NotFound`, as the real API's 404 NOT_FOUND does.
Thread-safe enough for an in-process worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shared.errors import SERVICE_SALESFORCE, NotFound


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._failures: dict[str, list[BaseException]] = {}
        self._hooks: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def on(self, method: str, action: Callable[[], None]) -> None:
        with self._lock:
            self._hooks.setdefault(method, []).append(action)

    def fail(self, method: str, exc: BaseException, times: int = 1) -> None:
        with self._lock:
            self._failures.setdefault(method, []).extend([exc] * times)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def _record(self, method: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((method, args))
            pending = self._failures.get(method)
            exc = pending.pop(0) if pending else None
            hooks = self._hooks.get(method)
            hook = hooks.pop(0) if hooks else None
        if hook is not None:
            hook()
        if exc is not None:
            raise exc

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def writes(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(name, args) for name, args in self.calls if not name.startswith(("get_", "find_"))]


class FakeResponse:
    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


class FakeGraph(_Recorder):
    """Users by id; `deleted` holds soft-deleted users (Graph's deletedItems); `groups_of` a user's transitive groups
    (`{"id", "displayName"}`), served through `request` as `users/{id}/transitiveMemberOf`."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.groups_of: dict[str, list[dict[str, Any]]] = {}

    def request(self, method: str, path: str, **_: Any) -> FakeResponse:
        self._record("request", method, path)
        user_id, _sep, relation = path.removeprefix("users/").partition("/")
        if relation == "transitiveMemberOf":
            return FakeResponse({"value": self.groups_of.get(user_id, [])})
        raise NotFound(f"no {path}", service="graph", status=404, code="Request_ResourceNotFound")

    def add_user(self, user_id: str, upn: str, enabled: bool = True) -> None:
        self.users[user_id] = {"id": user_id, "userPrincipalName": upn, "accountEnabled": enabled}

    def disable(self, user_id: str) -> None:
        self.users[user_id]["accountEnabled"] = False

    def enable(self, user_id: str) -> None:
        self.users[user_id]["accountEnabled"] = True

    def soft_delete(self, user_id: str) -> None:
        user = self.users.pop(user_id)
        mangled = user_id.replace("-", "") + user["userPrincipalName"]
        self.deleted[user_id] = {**user, "userPrincipalName": mangled}

    def hard_delete(self, user_id: str) -> None:
        self.users.pop(user_id, None)
        self.deleted.pop(user_id, None)

    def get_user(self, user_id: str, select: list[str] | None = None) -> dict[str, Any] | None:
        self._record("get_user", user_id)
        user = self.users.get(user_id)
        if user is None:
            return None
        return {k: v for k, v in user.items() if select is None or k in select}

    def get_deleted_user(self, user_id: str) -> dict[str, Any] | None:
        self._record("get_deleted_user", user_id)
        return self.deleted.get(user_id)


class FakeSalesforce(_Recorder):
    """Users by Id plus their UserLogin freeze flag; `find_user` matches like the real client."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.frozen: dict[str, bool] = {}

    def add_user(self, user_id: str, username: str, federation_id: str | None = None, active: bool = True) -> None:
        self.users[user_id] = {
            "Id": user_id,
            "Username": username,
            "IsActive": active,
            "FederationIdentifier": federation_id,
        }
        self.frozen[user_id] = False

    def find_user(self, entra_id: str | None, federation_id: str | None, username: str | None) -> dict[str, Any] | None:
        self._record("find_user", entra_id, federation_id, username)
        for wanted in (federation_id, entra_id):
            for user in self.users.values():
                if wanted and user["FederationIdentifier"] == wanted:
                    return dict(user)
        for user in self.users.values():
            if username and user["Username"] == username:
                return dict(user)
        return None

    def query_many(self, soqls: list[str]) -> list[list[dict[str, Any]]]:
        """No CRM records here: every query answers empty (the ownership transfer then has nothing to move)."""
        self._record("get_many", len(soqls))
        return [[] for _ in soqls]

    def get_user_login(self, user_id: str) -> dict[str, Any] | None:
        self._record("get_user_login", user_id)
        if user_id not in self.frozen:
            return None
        return {"Id": f"login-{user_id}", "UserId": user_id, "IsFrozen": self.frozen[user_id]}

    def _existing(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.users:
            raise NotFound(f"Provided external ID field does not exist or is not accessible: {user_id}",
                           service=SERVICE_SALESFORCE, status=404, code="NOT_FOUND")
        return self.users[user_id]

    def freeze_user(self, user_id: str, login: dict | None = None) -> None:
        self._record("freeze_user", user_id)
        self._existing(user_id)
        self.frozen[user_id] = True

    def unfreeze_user(self, user_id: str) -> None:
        self._record("unfreeze_user", user_id)
        self._existing(user_id)
        self.frozen[user_id] = False

    def deactivate_user(self, user_id: str) -> None:
        self._record("deactivate_user", user_id)
        self._existing(user_id)["IsActive"] = False

    def activate_user(self, user_id: str) -> None:
        self._record("activate_user", user_id)
        self._existing(user_id)["IsActive"] = True
