"""A dead worker's lesson moves: real LiveKit, Redis, two real workers and a real router."""

from __future__ import annotations

import pytest
import redis as redis_sync

from config.fleet import PoolKeys
from scripts.failover import TTL_ENV, kill_and_time_recovery
from scripts.servers import AvatarWorkerProcess, RouterProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]


async def test_killed_worker_avatar_is_back_in_the_room_within_10s(livekit_server, redis_url):
    workers = {w: AvatarWorkerProcess(livekit_server, redis_url, w, capacity=2,
                                      extra_env=TTL_ENV) for w in ("fo-a", "fo-b")}
    router = RouterProcess(livekit_server, redis_url, extra_env=TTL_ENV)
    try:
        for w in workers.values():
            w.start()
        router.start()
        result = await kill_and_time_recovery(router, workers, "failover-1", end_lesson=False)
    finally:
        router.stop()
        for w in workers.values():
            w.stop()
    assert result["now_on"] != result["faulted"]
    assert result["seconds"] <= 10, result
    row = redis_sync.Redis.from_url(redis_url).hgetall(PoolKeys("local").lesson("failover-1"))
    assert row[b"worker"].decode() == result["now_on"]
    assert int(row[b"fence"]) > result["fence_before"], "the move took a new fence"
