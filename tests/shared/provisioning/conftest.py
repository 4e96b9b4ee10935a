"""A sandbox with every demo group, a real redis-server, and the real clients, for the provisioning I/O tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from sandbox.server import SandboxServer
from shared.graph_client import GraphClient
from shared.provisioning.batch import SyncDeps
from shared.provisioning.catalog_reader import CatalogCache
from shared.provisioning.mapping_store import EXAMPLE_MAPPING, MappingStore
from shared.salesforce_client import SalesforceClient
from shared.settings import Settings, load_settings


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), users=120, groups=13, seed=11, overlap=0.4)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(sandbox: SandboxServer, redis_server: Any) -> Settings:
    values = {k.removeprefix("IDSYNC_").lower(): v for k, v in sandbox.env().items()}
    values["redis_url"] = redis_server.url
    return load_settings(_env_file=None, **values)


class Sent:
    """Records hand-offs to the revocation lane instead of a broker."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        self.tasks.append((name, args[0]))


@pytest.fixture
def deps(settings: Settings, redis_client: redis_lib.Redis) -> Iterator[SyncDeps]:
    graph = GraphClient(settings, sleep=lambda s: None)
    sf = SalesforceClient(settings)
    store = MappingStore(Path(EXAMPLE_MAPPING), redis_client)
    try:
        yield SyncDeps(settings, redis_client, graph, sf, store, CatalogCache(), Sent())
    finally:
        graph.close()
        sf.close()
