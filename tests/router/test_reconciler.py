"""Worker death: the reconciler moves its lessons to live workers with new fences and new
dispatches (real Redis, real LiveKit); racing reconcilers move each lesson exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from livekit import api

from config.fleet import DispatchMetadata, PoolKeys, agent_name, worker_client_name
from router.metrics import RouterMetrics
from router.service import Router
from router.store import LessonOptions
from tests.router.conftest import (
    API,
    BODY_TEMPLATE,
    TTL_S,
    SimWorker,
    make_settings,
    running_app,
)

pytestmark = [pytest.mark.redis, pytest.mark.livekit]


@pytest.fixture
async def lk(livekit_server):
    client = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    yield client
    await client.aclose()


async def named_dispatches(lk, room: str) -> list[tuple[str, DispatchMetadata]]:
    try:
        got = await lk.agent_dispatch.list_dispatch(room)
    except api.TwirpError:  # no such room yet: LiveKit answers 503 "no response from servers"
        return []
    return [(d.agent_name, DispatchMetadata.from_json(d.metadata)) for d in got if d.agent_name]


async def test_dead_worker_lessons_move_with_new_fences_and_dispatches(
        redis_url, regions_file, workers, lk, redis_client):
    w1 = await workers("w1", capacity=5)
    await workers("w2", capacity=5)
    await workers("w3", capacity=5)
    async with running_app(make_settings(redis_url, regions_file)) as c:
        before = {}
        for i in range(9):
            r = await c.post(f"/v1/lessons/dm{i}/join", json=BODY_TEMPLATE, headers=API)
            assert r.status_code == 200
            before[f"dm{i}"] = r.json()
        on_w1 = {k: v for k, v in before.items() if v["worker_id"] == "w1"}
        assert len(on_w1) == 3
        t0 = time.monotonic()
        await w1.die()
        k = PoolKeys("local")
        while await redis_client.scard(k.worker_lessons("w1")):
            assert time.monotonic() - t0 < TTL_S + 5, "reconciler did not move the lessons"
            await asyncio.sleep(0.1)
        moved_after = time.monotonic() - t0
        for lesson, old in on_w1.items():
            h = await redis_client.hgetall(k.lesson(lesson))
            new_worker, new_fence = h[b"worker"].decode(), int(h[b"fence"])
            assert new_worker in ("w2", "w3") and new_fence > old["fence"]
            # a second dispatch, to the new worker's agent name, with the new fence
            for _ in range(50):
                got = await named_dispatches(lk, old["room"])
                if len(got) == 2:
                    break
                await asyncio.sleep(0.1)
            assert sorted(m.fence for _, m in got) == [old["fence"], new_fence]
            latest = max(got, key=lambda x: x[1].fence)
            assert latest[0] == agent_name(new_worker) and latest[1].worker_id == new_worker
            # the join after the move answers the new worker (no third dispatch)
            r = await c.post(f"/v1/lessons/{lesson}/join", json=BODY_TEMPLATE, headers=API)
            assert (r.json()["worker_id"], r.json()["fence"]) == (new_worker, new_fence)
        # untouched lessons kept worker and fence
        for lesson, old in before.items():
            if lesson not in on_w1:
                h = await redis_client.hgetall(k.lesson(lesson))
                assert (h[b"worker"].decode(), int(h[b"fence"])) == (old["worker_id"],
                                                                      old["fence"])
        assert moved_after < TTL_S + 3
        # no capacity exceeded after the move
        for w in ("w2", "w3"):
            assert await redis_client.scard(k.worker_lessons(w)) <= 5
        assert 'router_reconciler_actions_total{action="moved"} 3.0' in (
            await c.get("/metrics")).text


async def test_a_killed_workers_lessons_move_without_waiting_out_the_ttl(
        redis_url, regions_file, workers, lk, redis_client):
    """A worker holds a named Redis connection; a killed process's connection closes at once,
    and the reconciler (CLIENT LIST) moves its lessons after the short grace, not the ttl. A
    live worker that merely shows no connection of its own keeps its lessons."""
    named = aioredis.Redis.from_url(redis_url, client_name=worker_client_name("local", "wk"))
    victim = await SimWorker(named, "wk", capacity=4).start()
    await workers("w2", capacity=4)  # heartbeats, but through a shared unnamed client
    settings = make_settings(redis_url, regions_file, heartbeat_ttl_s=10.0,
                             disconnect_grace_s=0.8)
    try:
        async with running_app(settings) as c:
            placed = {}
            for i in range(4):
                r = await c.post(f"/v1/lessons/kd{i}/join", json=BODY_TEMPLATE, headers=API)
                placed[f"kd{i}"] = r.json()["worker_id"]
            assert set(placed.values()) == {"wk", "w2"}
            await asyncio.sleep(2.0)  # w2 shows no connection of its own: it keeps its lessons
            k = PoolKeys("local")
            assert await redis_client.scard(k.worker_lessons("w2")) == sum(
                w == "w2" for w in placed.values())
            await victim.die()
            await named.aclose()  # the process is gone: so is its connection
            t0 = time.monotonic()
            while await redis_client.scard(k.worker_lessons("wk")):
                assert time.monotonic() - t0 < 5, "not moved before the 10 s ttl"
                await asyncio.sleep(0.05)
            moved_s = time.monotonic() - t0
            assert moved_s < 3, moved_s
            for lesson in placed:
                assert (await redis_client.hget(k.lesson(lesson), "worker")) == b"w2"
    finally:
        await victim.die()
        await named.aclose()


async def test_racing_reconcilers_move_each_lesson_once(redis_url, regions_file, workers, lk,
                                                        redis_client):
    settings = make_settings(redis_url, regions_file)
    w1 = await workers("w1", capacity=20)
    await workers("w2", capacity=20)
    await workers("w3", capacity=20)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    replicas = [Router(settings, r, RouterMetrics()) for r in clients]
    try:
        lead = replicas[0]
        lessons = [f"race{i}" for i in range(30)]
        for lesson in lessons:
            await lead.join(lesson, "u1")
        k = PoolKeys("local")
        victims = [x.decode() for x in await redis_client.smembers(k.worker_lessons("w1"))]
        assert len(victims) == 10
        old = {v: int(await redis_client.hget(k.lesson(v), "fence")) for v in victims}
        await w1.die()
        await asyncio.sleep(TTL_S + 0.3)
        results = await asyncio.gather(*(r.reconcile_once() for r in replicas))
        assert sum(x["moved"] for x in results) == 10  # each lesson moved by one replica only
        for v in victims:
            got = await named_dispatches(lk, f"lesson-{v}")
            fences = sorted(m.fence for _, m in got)
            assert len(fences) == 2 and fences[0] == old[v] and fences[1] > old[v]
        assert await redis_client.scard(k.worker_lessons("w1")) == 0
        # the dead worker with no lessons is forgotten on the next pass
        await lead.reconcile_once()
        assert await redis_client.zscore(k.workers_seen, "w1") is None
    finally:
        for r in replicas:
            await r.lk.aclose()
        for c in clients:
            await c.aclose()


async def test_dead_worker_spills_to_another_region_when_its_pool_is_full(
        tmp_path, redis_url, livekit_server, workers, lk, redis_client):
    from tests.router.conftest import write_regions

    regions = write_regions(tmp_path / "r.yaml", livekit_server, ("local", "east"))
    a = await workers("a", capacity=2, region="local")
    await workers("b", capacity=2, region="east")
    async with running_app(make_settings(redis_url, regions)) as c:
        r = (await c.post("/v1/lessons/sp1/join", json=BODY_TEMPLATE, headers=API)).json()
        assert r["region"] == "local"
        await a.die()
        deadline = time.monotonic() + TTL_S + 5
        while await redis_client.get("lesson-home:sp1") != b"east":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        h = await redis_client.hgetall(PoolKeys("east").lesson("sp1"))
        assert h[b"worker"] == b"b" and int(h[b"fence"]) > r["fence"]
        assert not await redis_client.exists(PoolKeys("local").lesson("sp1"))


async def test_no_capacity_keeps_the_lesson_until_a_worker_appears(
        redis_url, regions_file, workers, redis_client):
    a = await workers("a", capacity=1)
    async with running_app(make_settings(redis_url, regions_file)) as c:
        r = (await c.post("/v1/lessons/nc1/join", json=BODY_TEMPLATE, headers=API)).json()
        await a.die()
        await asyncio.sleep(TTL_S + 1)  # several passes with nowhere to go
        k = PoolKeys("local")
        assert (await redis_client.hget(k.lesson("nc1"), "worker")) == b"a"  # not lost
        assert 'action="no_capacity"' in (await c.get("/metrics")).text
        await workers("b", capacity=1)
        deadline = time.monotonic() + 5
        while (await redis_client.hget(k.lesson("nc1"), "worker")) != b"b":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert int(await redis_client.hget(k.lesson("nc1"), "fence")) > r["fence"]


async def test_claimed_but_never_dispatched_is_dispatched_by_the_reconciler(
        redis_url, regions_file, workers, lk, redis_client):
    """A router that crashed between claiming a dispatch and making it: after the lease, a
    reconciler makes the dispatch (once), with the voice agent identity the join carried."""
    await workers("w1", capacity=4)
    settings = make_settings(redis_url, regions_file)
    client = aioredis.Redis.from_url(redis_url)
    crashed = Router(settings, client, RouterMetrics())
    try:
        p = await crashed.store.place("orphan", ["local"], opts=LessonOptions(voice="tutor-agent"))
        assert p.assignment.must_dispatch  # claimed ... and the router "dies" here
        async with running_app(settings):
            deadline = time.monotonic() + settings.router.dispatch_lease_s + 5
            while not (got := await named_dispatches(lk, "lesson-orphan")):
                assert time.monotonic() < deadline, "never dispatched"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            got = await named_dispatches(lk, "lesson-orphan")
        assert len(got) == 1
        name, meta = got[0]
        assert name == "avatar-w1" and meta.fence == p.assignment.fence
        assert meta.voice_agent_identity == "tutor-agent"
        h = await redis_client.hgetall(PoolKeys("local").lesson("orphan"))
        assert h[b"dispatch_state"] in (b"done", b"live")  # live once the worker says so
    finally:
        await crashed.lk.aclose()
        await client.aclose()


async def test_worker_restarted_under_the_same_id_gets_its_lessons_redispatched(
        redis_url, regions_file, workers, lk, redis_client):
    """A restart keeps the worker id but starts a new epoch; its old jobs are gone, so each of
    its lessons gets a new fence and a new dispatch (a join right away sees the same)."""
    w1 = await workers("w1", capacity=4)
    await workers("w2", capacity=4)
    async with running_app(make_settings(redis_url, regions_file)) as c:
        old = {}
        for i in range(4):
            r = (await c.post(f"/v1/lessons/rs{i}/join", json=BODY_TEMPLATE, headers=API)).json()
            old[f"rs{i}"] = r
        on_w1 = [x for x, r in old.items() if r["worker_id"] == "w1"]
        assert on_w1
        await asyncio.sleep(0.8)  # a sweep has seen w1's current epoch
        await w1.member.register()  # the restart: same id, epoch + 1, heartbeating at once
        first = on_w1[0]
        r = (await c.post(f"/v1/lessons/{first}/join", json=BODY_TEMPLATE, headers=API)).json()
        assert r["fence"] > old[first]["fence"]
        k = PoolKeys("local")
        deadline = time.monotonic() + 5
        for lesson in on_w1:
            while int(await redis_client.hget(k.lesson(lesson), "fence")) == old[lesson]["fence"]:
                assert time.monotonic() < deadline, f"{lesson} kept its fence"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            got = await named_dispatches(lk, f"lesson-{lesson}")
            assert len(got) == 2 and sorted(m.fence for _, m in got)[0] == old[lesson]["fence"]
        for lesson in set(old) - set(on_w1):  # w2's lessons untouched
            assert int(await redis_client.hget(k.lesson(lesson), "fence")) == old[lesson]["fence"]
