"""A freshly seeded sandbox per test (reconciliation reads and changes the whole org), a real redis-server, the
real clients, and helpers that act the way an admin does: in Entra through Graph, in Salesforce as the human admin
(in Setup: the record's LastModifiedById becomes the admin, not idsync's integration user)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from sandbox.admin_clients import GraphAdmin, OrgAdmin
from sandbox.server import SandboxServer
from shared.graph_client import GraphClient
from shared.provisioning.batch import SyncDeps
from shared.provisioning.catalog_reader import CatalogCache
from shared.provisioning.mapping_store import EXAMPLE_MAPPING, MappingStore
from shared.reconcile.run_state import RunLog
from shared.reconcile.runner import Options, Reconciler
from shared.salesforce_client import SalesforceClient
from shared.settings import Settings, load_settings


class Sent:
    """Records hand-offs (the revocation lane) instead of a broker."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        self.tasks.append((name, args[0]))


def seeded(tmp: Path, **kwargs: Any) -> SandboxServer:
    args = {"users": 60, "groups": 13, "seed": 7, "overlap": 1.0, **kwargs}
    server = SandboxServer(tmp, **args)
    server.start()
    return server


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = seeded(tmp_path / "sandbox")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(sandbox: SandboxServer, redis_server: Any, tmp_path: Path) -> Settings:
    values: dict[str, Any] = {k.removeprefix("IDSYNC_").lower(): v for k, v in sandbox.env().items()}
    values.update(redis_url=redis_server.url, var_dir=str(tmp_path / "var"), reconcile_chunk_size=10)
    return load_settings(_env_file=None, **values)


def make_deps(settings: Settings, redis_client: redis_lib.Redis) -> SyncDeps:
    return SyncDeps(settings, redis_client, GraphClient(settings, sleep=lambda s: None), SalesforceClient(settings),
                    MappingStore(Path(EXAMPLE_MAPPING), redis_client), CatalogCache(), Sent())


@pytest.fixture
def deps(settings: Settings, redis_client: redis_lib.Redis) -> Iterator[SyncDeps]:
    made = make_deps(settings, redis_client)
    try:
        yield made
    finally:
        made.graph.close()
        made.sf.close()


@pytest.fixture
def tenant(sandbox: SandboxServer) -> GraphAdmin:
    return GraphAdmin(sandbox.env())


@pytest.fixture
def org(sandbox: SandboxServer) -> OrgAdmin:
    return OrgAdmin(sandbox.env())


def reconcile(deps: SyncDeps, **options: Any) -> RunLog:
    return Reconciler(deps).run(Options(**options))


class Setup:
    """What a Salesforce admin does by hand in Setup, as the seeded human admin (not idsync's user)."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.org = sandbox.state.org
        self.admin_id = self.org.seed_info["admin_user_id"]

    def user(self, username: str) -> dict[str, Any]:
        with self.org.lock:
            uid = self.org.unique[("User", "Username")][username.lower()]
            return dict(self.org.live["User"][uid])

    def edit_user(self, username: str, **fields: Any) -> None:
        self.org.update("User", self.user(username)["Id"], fields, actor=self.admin_id)

    def insert_user(self, **fields: Any) -> str:
        values = {"TimeZoneSidKey": "America/Los_Angeles", "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
                  "LanguageLocaleKey": "en_US", "ProfileId": self.org.seed_info["profiles"]["Standard User"],
                  **fields}
        values.setdefault("Alias", str(fields["LastName"])[:8])
        values.setdefault("Email", fields["Username"])
        return self.org.insert("User", values, actor=self.admin_id)

    def remove_permission_set(self, username: str, name: str) -> None:
        ps_id = self.org.seed_info["permission_sets"][name]
        user_id = self.user(username)["Id"]
        with self.org.lock:
            psa = next(r["Id"] for r in self.org.live["PermissionSetAssignment"].values()
                       if r["AssigneeId"] == user_id and r.get("PermissionSetId") == ps_id)
        self.org.delete("PermissionSetAssignment", psa, actor=self.admin_id)


@pytest.fixture
def setup(sandbox: SandboxServer) -> Setup:
    return Setup(sandbox)
