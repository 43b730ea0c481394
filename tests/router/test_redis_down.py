"""Redis goes away: the API answers 503 with Retry-After (JSON reason), /readyz says not ready,
and when Redis is back the same router process serves again (no restart)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from scripts.servers import RedisServer
from tests.router.conftest import API, BODY_TEMPLATE, OPS, SimWorker, make_settings, running_app

pytestmark = [pytest.mark.redis, pytest.mark.livekit]


async def test_redis_down_503_then_recovers_without_restart(regions_file):
    server = RedisServer().start()
    port = server.port
    wclient = aioredis.Redis.from_url(server.url, socket_timeout=0.5,
                                      socket_connect_timeout=0.5)
    worker = await SimWorker(wclient, "w1", capacity=10).start()
    try:
        async with running_app(make_settings(server.url, regions_file)) as c:
            r = await c.post("/v1/lessons/before/join", json=BODY_TEMPLATE, headers=API)
            assert r.status_code == 200
            fence_before = r.json()["fence"]
            server.kill()
            t0 = time.monotonic()
            for path, method in (("/v1/lessons/during/join", "post"),
                                 ("/v1/lessons/before/say", "post"),
                                 ("/v1/lessons/before", "delete")):
                kwargs = {"json": BODY_TEMPLATE} if path.endswith("join") else (
                    {"json": {"text": "hi"}} if path.endswith("say") else {})
                r = await getattr(c, method)(path, headers=API, **kwargs)
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "redis_unavailable"
                assert r.headers["retry-after"] == "2"
            assert time.monotonic() - t0 < 5  # fails fast, does not hang
            r = await c.get("/v1/workers", headers=OPS)
            assert r.status_code == 503
            assert (await c.get("/readyz")).status_code == 503
            assert (await c.get("/healthz")).status_code == 200  # the process itself is fine
            # Redis comes back on the same address, without its data (a new data directory)
            server2 = RedisServer(port=port).start()
            try:
                deadline = time.monotonic() + 10
                while True:  # the worker's next heartbeat re-registers it
                    r = await c.post("/v1/lessons/after/join", json=BODY_TEMPLATE, headers=API)
                    if r.status_code == 200:
                        break
                    assert r.status_code == 503 and time.monotonic() < deadline, r.text
                    await asyncio.sleep(0.2)
                assert r.json()["worker_id"] == "w1"
                assert r.json()["fence"] > fence_before, "fences never repeat, even then"
                assert (await c.get("/readyz")).status_code == 200  # scripts loaded again
            finally:
                server2.__exit__(None, None, None)
    finally:
        await worker.die()
        await wclient.aclose()
        server.__exit__(None, None, None)
