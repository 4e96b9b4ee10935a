"""The per-process context: built lazily, overridable in tests, rebuilt after fork."""

from __future__ import annotations

import os

import fakeredis

from shared.settings import load_settings
from workers import context


def test_overrides_replace_clients_for_every_lane_and_the_stores_use_the_given_redis() -> None:
    context.reset()
    try:
        r = fakeredis.FakeRedis(decode_responses=True)
        fake_graph, fake_sf = object(), object()
        ctx = context.override(settings=load_settings(_env_file=None), redis=r, graph=fake_graph, salesforce=fake_sf)
        assert context.get() is ctx
        assert ctx.graph("revocation") is fake_graph and ctx.graph("sync") is fake_graph
        assert ctx.salesforce("sync") is fake_sf
        ctx.links.set_tombstone("u1", 5.0)
        assert r.get("idsync:tombstone:u1") == "5.0"
        assert ctx.dlq.redis is r
    finally:
        context.reset()


def test_a_forked_child_builds_its_own_context() -> None:
    context.reset()
    try:
        parent = context.get()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report whether it got a fresh context, then exit without pytest's teardown
            child = context.get()
            os.write(write, b"fresh" if child is not parent and child.pid == os.getpid() else b"shared")
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        assert os.read(read, 16) == b"fresh"
        assert context.get() is parent
    finally:
        context.reset()
