"""The worker side of the fleet contract, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from config.fleet import (
    DispatchMetadata,
    FleetMember,
    PoolKeys,
    WorkerState,
    agent_name,
    valid_id,
)

pytestmark = pytest.mark.redis


async def test_register_and_heartbeat_write_the_pool_layout(redis_client):
    m = FleetMember(redis_client, "w1", "eu", capacity=4)
    assert await m.register() == 1
    k = PoolKeys("eu")
    assert k.worker("w1") == "{pool:eu}:worker:w1"
    row = {a.decode(): b.decode() for a, b in (await redis_client.hgetall(k.worker("w1"))).items()}
    assert row["capacity"] == "4" and row["state"] == "serving" and row["region"] == "eu"
    assert row["active"] == "0" and row["epoch"] == "1"
    seen1 = await redis_client.zscore(k.workers_seen, "w1")
    server_ms = (await redis_client.time())[0] * 1000
    assert abs(seen1 - server_ms) < 2000, "seen time is Redis TIME in ms"
    assert await redis_client.zscore(k.workers_load, "w1") == 0

    await asyncio.sleep(0.02)
    await redis_client.zadd(k.workers_load, {"w1": 3})  # the router's reservations
    now = await m.heartbeat(active=2)
    assert await redis_client.zscore(k.workers_seen, "w1") == now > seen1
    assert await redis_client.zscore(k.workers_load, "w1") == 3, "heartbeat never resets load"
    assert await redis_client.hget(k.worker("w1"), "active") == b"2"


async def test_restart_is_a_new_epoch_and_drain_is_visible(redis_client):
    m = FleetMember(redis_client, "w2", "eu", capacity=2)
    await m.register()
    again = FleetMember(redis_client, "w2", "eu", capacity=2)
    assert await again.register() == 2
    await again.drain(active=1)
    assert await redis_client.hget(PoolKeys("eu").worker("w2"), "state") == b"draining"
    await again.leave()
    assert await redis_client.zscore(PoolKeys("eu").workers_seen, "w2") is None
    assert await redis_client.hget(PoolKeys("eu").worker("w2"), "state") == b"stopped"


async def test_fence_check_accepts_only_the_current_fence_for_this_worker(redis_client):
    m = FleetMember(redis_client, "w3", "us", capacity=2)
    await m.register()
    k = PoolKeys("us")
    await redis_client.hset(k.lesson("L9"), mapping={"worker": "w3", "fence": 12})
    assert await m.fence_is_current(DispatchMetadata(lesson_id="L9", worker_id="w3", fence=12))
    assert not await m.fence_is_current(DispatchMetadata(lesson_id="L9", worker_id="w3", fence=11))
    assert not await m.fence_is_current(DispatchMetadata(lesson_id="L8", worker_id="w3", fence=12))
    await redis_client.hset(k.lesson("L9"), mapping={"worker": "w4", "fence": 13})
    assert not await m.fence_is_current(DispatchMetadata(lesson_id="L9", worker_id="w3", fence=12))


def test_dispatch_metadata_round_trip_and_validation():
    meta = DispatchMetadata(lesson_id="lesson-1", worker_id="gpu-a_1", fence=3, region="eu")
    assert DispatchMetadata.from_json(meta.to_json()) == meta
    assert "voice_agent_identity" not in meta.to_json()
    with pytest.raises(ValidationError):
        DispatchMetadata.from_json('{"lesson_id": "x y", "worker_id": "w", "fence": 1}')
    with pytest.raises(ValidationError):
        DispatchMetadata.from_json('{"lesson_id": "x", "worker_id": "w", "fence": 0}')
    assert agent_name("gpu-a_1") == "avatar-gpu-a_1"
    assert valid_id("abc-DEF_09") and not valid_id("a/b") and not valid_id("x" * 65)
    assert WorkerState("draining") is WorkerState.DRAINING


def test_bad_worker_id_is_refused(redis_server):
    with pytest.raises(ValueError, match="worker id"):
        FleetMember(None, "has space", "eu", 1)
