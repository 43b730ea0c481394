"""The avatar worker as a fleet member, run as a real process (`python -m agent start`) against
the real LiveKit server and Redis: heartbeats, fencing, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
import redis as redis_sync
from livekit import api

from agent.worker import retry_delay
from config.fleet import DispatchMetadata, PoolKeys, agent_name, avatar_identity, room_name
from scripts.servers import AvatarWorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
REGION = "local"


@pytest.fixture
def worker(livekit_server, redis_url):
    """`python -m agent start` as worker `w-test` with capacity 2; yields (proc, log path)."""
    w = AvatarWorkerProcess(livekit_server, redis_url, "w-test", REGION, capacity=2)
    with w:
        yield w.proc, w.logfile


async def _participants(lk: api.LiveKitAPI, room: str) -> dict[str, object]:
    try:
        res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    except api.TwirpError as exc:
        if exc.code == "not_found":
            return {}
        raise
    return {p.identity: p for p in res.participants}


async def _wait_for(cond, timeout: float = 20.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await cond()
        if value:
            return value
        await asyncio.sleep(step)
    return await cond()


async def _dispatch(lk, lesson: str, fence: int, voice: str | None = None,
                    worker: str = "w-test") -> None:
    meta = DispatchMetadata(lesson_id=lesson, worker_id=worker, fence=fence,
                            voice_agent_identity=voice)
    await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
        agent_name=agent_name(worker), room=room_name(lesson), metadata=meta.to_json()))


async def test_heartbeat_fence_check_and_avatar_identity(worker, livekit_server, redis_url):
    r = redis_sync.Redis.from_url(redis_url)
    keys = PoolKeys(REGION)
    seen = r.zscore(keys.workers_seen, "w-test")
    await asyncio.sleep(1.5)
    assert r.zscore(keys.workers_seen, "w-test") > seen, "heartbeats every second"
    assert r.hget(keys.worker("w-test"), "capacity") == b"2"

    # The router's side of an assignment: the lesson's current fence is 5.
    r.hset(keys.lesson("L-ok"), mapping={"worker": "w-test", "fence": 5})
    r.hset(keys.lesson("L-stale"), mapping={"worker": "w-test", "fence": 9})
    async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                              livekit_server.api_secret) as lk:
        await _dispatch(lk, "L-stale", fence=8)  # a re-dispatch already superseded it
        await _dispatch(lk, "L-ok", fence=5, voice="voice-agent-1")

        async def joined():
            return (await _participants(lk, room_name("L-ok"))).get(avatar_identity("L-ok"))

        avatar = await _wait_for(joined)
        assert avatar is not None, "the avatar joins with the current fence"
        assert avatar.kind == 4  # ParticipantInfo.Kind.AGENT
        assert avatar.attributes["lk.publish_on_behalf"] == "voice-agent-1"
        assert avatar.attributes["fence"] == "5"

        async def active_is_1():
            return r.hget(keys.worker("w-test"), "active") == b"1"

        assert await _wait_for(active_is_1, 5), "the heartbeat reports the running session"

        async def live():
            return r.hmget(keys.lesson("L-ok"), "dispatch_state", "dispatch_fence") == [
                b"live", b"5"]

        assert await _wait_for(live, 5), "the worker reports its avatar live under its fence"
        await asyncio.sleep(1.0)
        assert avatar_identity("L-stale") not in await _participants(lk, room_name("L-stale")), \
            "a job with a stale fence is rejected"

    async def rejections():
        lines = [json.loads(x) for x in worker[1].read_text().splitlines() if x.startswith("{")]
        return [x for x in lines if x.get("event") == "job.rejected"]

    rejected = await _wait_for(rejections, 15)
    # LiveKit may offer a refused job again; every offer is refused for the same reason.
    assert rejected and {(x["lesson_id"], x["fence"], x["reason"]) for x in rejected} == {
        ("L-stale", 8, "stale fence")}
    assert all(x["worker_id"] == "w-test" for x in rejected)


async def test_sigterm_marks_draining_first_and_lets_the_lesson_finish(worker, livekit_server,
                                                                     redis_url):
    proc, log = worker
    r = redis_sync.Redis.from_url(redis_url)
    keys = PoolKeys(REGION)
    r.hset(keys.lesson("L-d"), mapping={"worker": "w-test", "fence": 1})
    async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                              livekit_server.api_secret) as lk:
        await _dispatch(lk, "L-d", fence=1)

        async def joined():
            return avatar_identity("L-d") in await _participants(lk, room_name("L-d"))

        assert await _wait_for(joined)
        proc.send_signal(signal.SIGTERM)

        async def draining():
            return r.hget(keys.worker("w-test"), "state") == b"draining"

        assert await _wait_for(draining, 5), "draining is visible in Redis at once"
        await asyncio.sleep(2.0)
        assert proc.poll() is None, "the running lesson keeps the worker alive"
        assert await joined(), "the avatar is still in its lesson"

        # A new dispatch while draining is not taken.
        r.hset(keys.lesson("L-new"), mapping={"worker": "w-test", "fence": 1})
        await _dispatch(lk, "L-new", fence=1)
        await asyncio.sleep(2.0)
        assert avatar_identity("L-new") not in await _participants(lk, room_name("L-new"))

        # The lesson ends: the worker finishes, leaves the pool and exits.
        await lk.room.delete_room(api.DeleteRoomRequest(room=room_name("L-d")))
    rc = await asyncio.to_thread(proc.wait, 30)
    assert rc == 0, log.read_text()[-3000:]
    assert r.hget(keys.worker("w-test"), "state") == b"stopped"
    assert r.zscore(keys.workers_seen, "w-test") is None


async def test_ops_drain_flag_from_the_router_makes_the_worker_drain(worker, livekit_server,
                                                                    redis_url):
    """POST /v1/workers/{id}/drain sets drain=1 on the worker's hash; the worker notices on its
    next heartbeat, reports draining and takes no new lesson."""
    proc, _log = worker
    r = redis_sync.Redis.from_url(redis_url)
    keys = PoolKeys(REGION)
    r.hset(keys.worker("w-test"), "drain", "1")

    async def draining():
        return r.hget(keys.worker("w-test"), "state") == b"draining"

    assert await _wait_for(draining, 5)
    r.hset(keys.lesson("L-after"), mapping={"worker": "w-test", "fence": 1})
    async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                              livekit_server.api_secret) as lk:
        await _dispatch(lk, "L-after", fence=1)
        await asyncio.sleep(2.0)
        assert avatar_identity("L-after") not in await _participants(lk, room_name("L-after"))
    assert proc.poll() is None, "draining, not gone: ops drain does not kill running lessons"


async def test_a_lesson_whose_room_ends_frees_its_seat_unless_it_moved(worker, livekit_server,
                                                                       redis_url):
    """The learner leaves and LiveKit closes the room: the worker releases the lesson (its seat
    counts no more) with its fence. A lesson that moved on (newer fence) is left alone."""
    import redis.asyncio as aioredis
    from livekit import rtc

    from config.fleet import lesson_home_key
    from router.store import FleetStore
    from scripts.room_probe import token

    r = redis_sync.Redis.from_url(redis_url)
    keys = PoolKeys(REGION)
    client = aioredis.Redis.from_url(redis_url)
    store = FleetStore(client, heartbeat_ttl_s=3, dispatch_lease_s=5)
    learners = []
    try:
        async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                                  livekit_server.api_secret) as lk:
            for lesson in ("L-end", "L-moved"):
                placed = await store.place(lesson, [REGION])
                assert placed.assignment and placed.assignment.worker_id == "w-test"
                room = rtc.Room()
                await room.connect(livekit_server.url, token(livekit_server, "learner",
                                                             room_name(lesson)))
                learners.append(room)
                await _dispatch(lk, lesson, fence=placed.assignment.fence)

                async def joined(lesson=lesson):
                    return avatar_identity(lesson) in await _participants(lk, room_name(lesson))

                assert await _wait_for(joined), lesson
            assert r.zscore(keys.workers_load, "w-test") == 2
            # the router moved L-moved elsewhere meanwhile: its fence is no longer ours
            r.hset(keys.lesson("L-moved"), "fence", 99)

            for room in learners:
                await room.disconnect()  # LiveKit closes each room after its departure timeout

            async def released():
                return not r.exists(keys.lesson("L-end"))

            assert await _wait_for(released, 30), "the ended lesson is released"
            assert r.zscore(keys.workers_load, "w-test") == 1, "its seat is free"
            assert r.smembers(keys.worker_lessons("w-test")) == {b"L-moved"}
            assert not r.exists(lesson_home_key("L-end"))

            async def both_gone():
                return not (await _participants(lk, room_name("L-moved")))

            assert await _wait_for(both_gone, 30)
            await asyncio.sleep(1.0)
            assert r.hget(keys.lesson("L-moved"), "fence") == b"99", "a moved lesson is untouched"
    finally:
        await client.aclose()


async def test_a_worker_is_filled_to_its_capacity(livekit_server, redis_url):
    """LiveKit offers a job only while the worker's reported load is under its target load
    (0.7): a capacity-4 worker must still be offered its 4th lesson, and the 5th is refused by
    the worker itself (the router never sends it; this one comes straight to LiveKit)."""
    r = redis_sync.Redis.from_url(redis_url)
    keys = PoolKeys(REGION)
    lessons = [f"cap-{i}" for i in range(5)]
    with AvatarWorkerProcess(livekit_server, redis_url, "w-cap", REGION, capacity=4) as w:
        async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                                  livekit_server.api_secret) as lk:
            for i, lesson in enumerate(lessons):
                r.hset(keys.lesson(lesson), mapping={"worker": "w-cap", "fence": 1})
                await _dispatch(lk, lesson, fence=1, worker="w-cap")

                async def joined(lesson=lesson):
                    return avatar_identity(lesson) in await _participants(lk, room_name(lesson))

                if i < 4:
                    assert await _wait_for(joined, 30), f"lesson {i + 1} of 4 gets its avatar"
                    await asyncio.sleep(1.0)  # LiveKit hears the new load (every 0.5 s)
                else:
                    await asyncio.sleep(3.0)
                    assert not await joined(), "a 5th lesson is refused"

            async def full_refusal():
                lines = [json.loads(x) for x in w.logfile.read_text().splitlines()
                         if x.startswith("{")]
                return [x for x in lines if x.get("event") == "job.rejected"]

            refused = await _wait_for(full_refusal, 10)
            assert refused and {x["reason"] for x in refused} == {"at capacity"}
            assert {x["lesson_id"] for x in refused} == {"cap-4"}
            assert r.hget(keys.worker("w-cap"), "active") == b"4"
            for lesson in lessons:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room_name(lesson)))


def test_a_worker_that_cannot_start_says_why(livekit_server, redis_url, tmp_path):
    """The real error is in the log, not the SDK's drain tripping over a worker that never
    started (it used to end with AttributeError: '_proc_pool')."""
    from scripts.servers import ServerError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    w = AvatarWorkerProcess(livekit_server, redis_url, "w-broken", REGION, capacity=1,
                            extra_env={"FLEET_AVATAR_CACHE": str(blocker / "avatars"),
                                       "FLEET_AVATAR_SEED": ""})
    try:
        with pytest.raises(ServerError, match="exited"):
            w.start()
        text = w.logfile.read_text()
    finally:
        w.stop()
    assert "NotADirectoryError" in text or "FileExistsError" in text, text[-2000:]
    assert "_proc_pool" not in text


def test_after_a_failed_heartbeat_the_next_comes_sooner_jittered():
    for failed, interval, low, high in [(1, 1.0, 0.1875, 0.25), (2, 1.0, 0.375, 0.5),
                                        (10, 1.0, 0.375, 0.5), (10, 0.2, 0.15, 0.2)]:
        delays = [retry_delay(failed, interval) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high, (failed, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.01, "jittered, so a fleet does not retry in step"
