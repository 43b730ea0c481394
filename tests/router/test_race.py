"""The race: 10,000 joins over 1,000 lessons sent at once to 4 real router processes (uvicorn,
the real HTTP path) sharing one real Redis and one real LiveKit. Capacity is a little short on
purpose (960 seats), so the full path is raced too. Afterwards the state is scanned: exactly
one worker per lesson, no worker over capacity, every answer for a lesson named the same
worker, and one dispatch per assigned lesson in LiveKit.

``AVATAR_RACE_JOINS`` / ``AVATAR_RACE_LESSONS`` scale it (defaults 10000 / 1000)."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time

import pytest
from livekit import api

from config.fleet import PoolKeys, lesson_home_key
from scripts.servers import LiveKitServer
from tests.router.conftest import BODY_TEMPLATE, fire, router_env

pytestmark = [pytest.mark.redis, pytest.mark.livekit]

JOINS = int(os.environ.get("AVATAR_RACE_JOINS", "10000"))
LESSONS = int(os.environ.get("AVATAR_RACE_LESSONS", "1000"))
WORKERS, CAPACITY = 24, max(1, (LESSONS * 24 // 25) // 24)  # 96 % of the lessons fit


@pytest.fixture(scope="module")
def livekit_server():
    """This module's own LiveKit, whose empty rooms stay open: the rooms the dispatches create
    are checked at the end, and 10k joins on 2 busy cores can outlast the shared server's 30 s
    empty-room timeout (ListDispatch on a closed room: 503 "no response from servers")."""
    with LiveKitServer(empty_timeout_s=600) as server:
        yield server


async def test_10k_joins_1k_lessons_4_routers(redis_url, regions_file, router_procs, workers,
                                              redis_client, livekit_server):
    for i in range(WORKERS):
        await workers(f"w{i:02d}", capacity=CAPACITY)
    routers = router_procs(router_env(redis_url, regions_file), 4)
    seats = WORKERS * CAPACITY
    rng = random.Random(7)
    lessons = [f"race-{i:04d}" for i in range(LESSONS)]
    # every lesson at least once, the rest at random; each request to a random router
    picks = lessons + [rng.choice(lessons) for _ in range(JOINS - LESSONS)]
    rng.shuffle(picks)
    reqs = [("POST", f"{rng.choice(routers).url}/v1/lessons/{lesson}/join",
             {**BODY_TEMPLATE, "user_id": f"u{rng.randrange(10**6)}"}) for lesson in picks]
    t0 = time.monotonic()
    res = await fire(reqs, concurrency=128)
    elapsed = time.monotonic() - t0
    print(f"race: {JOINS} joins / {LESSONS} lessons / 4 routers in {elapsed:.1f}s "
          f"({JOINS / elapsed:.0f}/s)")

    codes = collections.Counter(c for c, _ in res)
    assert set(codes) <= {200, 503}, codes
    answers: dict[str, set] = collections.defaultdict(set)
    for lesson, (code, body) in zip(picks, res, strict=True):
        if code == 200:
            answers[lesson].add(body["worker_id"])
        else:
            assert body["error"] == "no_capacity", body
    assert len(answers) == seats  # every seat taken, no more
    assert all(len(ws) == 1 for ws in answers.values())  # one worker per lesson, every answer

    # scan the state
    k = PoolKeys("local")
    owner: dict[str, str] = {}
    for i in range(WORKERS):
        w = f"w{i:02d}"
        members = {m.decode() for m in await redis_client.smembers(k.worker_lessons(w))}
        assert len(members) <= CAPACITY, f"{w} over capacity: {len(members)}"
        assert await redis_client.zscore(k.workers_load, w) == len(members)
        for m in members:
            assert m not in owner, f"{m} on {owner[m]} and {w}"
            owner[m] = w
    assert len(owner) == seats
    for lesson in lessons:
        h = await redis_client.hgetall(k.lesson(lesson))
        if lesson in answers:
            assert h[b"worker"].decode() == owner[lesson] == next(iter(answers[lesson]))
            assert await redis_client.get(lesson_home_key(lesson)) == b"local"
            assert h[b"dispatch_state"] in (b"done", b"live")
        else:
            assert not h and lesson not in owner
    fences = [int(await redis_client.hget(k.lesson(x), "fence")) for x in answers]
    assert len(set(fences)) == len(fences)  # one fence per assignment

    # LiveKit: one named dispatch per assigned lesson, to its worker
    lk = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    sem = asyncio.Semaphore(32)

    async def dispatches(lesson: str):
        async with sem:
            return [d for d in await lk.agent_dispatch.list_dispatch(f"lesson-{lesson}")
                    if d.agent_name]
    try:
        got = await asyncio.gather(*(dispatches(x) for x in answers))
    finally:
        await lk.aclose()
    for lesson, ds in zip(answers, got, strict=True):
        assert [d.agent_name for d in ds] == [f"avatar-{owner[lesson]}"], (lesson, ds)
