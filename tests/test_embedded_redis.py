from pathlib import Path

import redis

from ops.embedded_redis import EmbeddedRedis, find_redis_server


def test_finds_a_redis_server_binary():
    assert Path(find_redis_server()).exists()


def test_embedded_redis_persists_with_aof_across_restart(tmp_path):
    server = EmbeddedRedis(tmp_path / "r").start()
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    port = server.port
    server.stop()
    server2 = EmbeddedRedis(tmp_path / "r", port=port).start()
    try:
        assert redis.Redis.from_url(server2.url).get("k") == b"v"
    finally:
        server2.stop()
