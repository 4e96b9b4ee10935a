"""The Microsoft side of the sandbox: identity platform (token endpoint, OIDC discovery) and Microsoft Graph v1.0.

`install` creates the tenant's `Directory`, lets the change-notification side hook into it, and returns the routes:
subscriptions first (their paths are more specific), then one catch-all `/v1.0/...` endpoint dispatching through the
Graph router (shared with `$batch`), then the identity platform's `/{tenant}/...` endpoints.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route

from sandbox.graph import batch, delta, groups, invitations, users
from sandbox.graph.identity import install_identity
from sandbox.graph.routing import Router, make_endpoint
from sandbox.graph.store import Directory


def build_router(state: Any) -> Router:
    router = Router(state)
    delta.register(router)  # before users/groups: "/users/delta" must not be read as a user id
    batch.register(router)
    users.register(router)
    groups.register(router)
    invitations.register(router)
    return router


def install(state: Any) -> list[BaseRoute]:
    state.directory = Directory(state)
    from sandbox.graph.subscriptions import install_subscriptions

    routes: list[BaseRoute] = list(install_subscriptions(state))
    router = build_router(state)
    state.directory.router = router
    routes.append(Route("/v1.0/{path:path}", make_endpoint(router), methods=["GET", "POST", "PATCH", "PUT", "DELETE"]))
    routes += install_identity(state)
    return routes
