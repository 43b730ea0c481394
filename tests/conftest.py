"""Fixtures that start real servers (see scripts/servers/). Nothing here is a mock."""

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


# --- Process exit ------------------------------------------------------------------------------
# livekit.rtc's native runtime (tokio threads in liblivekit_ffi) can call back into Python while
# the interpreter finalises, and then aborts the whole process ("panic in a function that cannot
# unwind", SIGABRT) *after* every test has passed: make and CI then see a failure that is not one.
# By the time ``pytest_unconfigure`` runs, every fixture has stopped its servers and the summary is
# printed, so we leave with pytest's own exit status and skip interpreter finalisation, which is
# the only thing that can still go wrong. Exit statuses are unchanged (failures, and 5 for "no
# tests", stay non-zero).
_exit_status: int | None = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import os
    import sys

    if _exit_status is None or "livekit.rtc" not in sys.modules:
        return
    if os.environ.get("AVATAR_PYTEST_NORMAL_EXIT") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
