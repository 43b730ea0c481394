"""Fixtures that start real servers (see scripts/servers.py). Nothing here is a mock."""

from __future__ import annotations

import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from scripts.servers import LiveKitServer, NginxServer, RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the test session; tests flush it (see ``redis_url``)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    redis_sync.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def livekit_server():
    """A single-node livekit-server v1.13.5 in dev mode on free loopback ports."""
    with LiveKitServer() as server:
        yield server


@pytest.fixture(scope="session")
def livekit_multinode():
    """Two livekit-server nodes sharing one real Redis (the multi-node deployment)."""
    with RedisServer() as r, LiveKitServer(redis_address=r.address) as a, \
            LiveKitServer(redis_address=r.address) as b:
        yield a, b, r


@pytest.fixture
def nginx_factory():
    """Start nginx with a config text; every nginx started is stopped after the test."""
    started: list[NginxServer] = []

    def start(config_text: str, port: int | None = None) -> NginxServer:
        server = NginxServer(config_text, port=port)
        started.append(server)
        return server.start()

    yield start
    for s in started:
        s.__exit__(None, None, None)
