"""The embedded Redis: AOF on, a random password, protected mode, the password never on the command line, and a
restart that brings the same server back (same URL, same data)."""

from pathlib import Path

import pytest
import redis

from ops.embedded_redis import EmbeddedRedis, find_redis_server


def test_finds_a_redis_server_binary():
    assert Path(find_redis_server()).exists()


@pytest.fixture
def server(tmp_path):
    srv = EmbeddedRedis(tmp_path / "r").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_an_unauthenticated_client_is_refused(server):
    anonymous = redis.Redis(host=server.host, port=server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=server.host, port=server.port, password="wrong").ping()
    assert redis.Redis.from_url(server.url).ping() is True


def test_each_server_gets_its_own_random_password_carried_in_its_url(tmp_path, server):
    other = EmbeddedRedis(tmp_path / "other")
    assert len(server.password) >= 24
    assert other.password != server.password
    assert server.url == f"redis://:{server.password}@127.0.0.1:{server.port}/0"


def test_the_password_is_not_on_the_command_line_and_protected_mode_stays_on(server):
    assert server.proc is not None
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    assert server.password.encode() not in cmdline, "`ps` would show it to every local user"
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.config_get("protected-mode")["protected-mode"] == "yes"
    assert client.config_get("bind")["bind"] == "127.0.0.1"


def test_embedded_redis_persists_with_aof_across_restart(server):
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    url = server.url
    server.kill()
    server.start()  # what the supervisor does after a crash: same port, directory and password
    assert server.url == url
    assert redis.Redis.from_url(url).get("k") == b"v"
