"""config.redis_client.connect against a real redis-server that stops answering (SIGSTOP: the
connection stays open and no reply comes, as behind a network that drops packets)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from config.redis_client import REDIS_ERRORS, connect
from scripts.servers import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def silent_redis():
    """A Redis that answered once, then is stopped; resumed (and stopped) afterwards."""
    with RedisServer(persist=False) as r:
        yield r
        os.kill(r.proc.pid, signal.SIGCONT)


async def test_a_bounded_client_fails_within_twice_its_timeout_and_recovers(silent_redis):
    client = connect(silent_redis.url, timeout_s=0.3)
    try:
        assert await client.ping()
        os.kill(silent_redis.proc.pid, signal.SIGSTOP)
        for _ in range(2):  # the open connection, then a fresh one
            t0 = time.monotonic()
            with pytest.raises(REDIS_ERRORS):
                await client.set("k", "v")
            took = time.monotonic() - t0
            assert 0.3 <= took < 0.9, f"a silent Redis failed the call after {took:.2f} s"
        os.kill(silent_redis.proc.pid, signal.SIGCONT)
        assert await client.set("k", "v") and await client.get("k") == b"v"
    finally:
        await client.aclose()


async def test_without_a_timeout_one_call_outwaits_a_heartbeat_ttl(silent_redis):
    """Why the fleet's clients pass ``timeout_s``: redis-py's default waits 5 s for a reply,
    longer than the worker's heartbeat ttl (4 s), so one stuck heartbeat made a live worker
    look dead."""
    client = connect(silent_redis.url)
    try:
        assert await client.ping()
        os.kill(silent_redis.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(REDIS_ERRORS):
            await asyncio.wait_for(client.set("k", "v"), 30)
        assert time.monotonic() - t0 >= 4.0
    finally:
        os.kill(silent_redis.proc.pid, signal.SIGCONT)
        await client.aclose()
