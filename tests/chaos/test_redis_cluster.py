"""The router and a worker on a real Redis Cluster (3 primaries + 3 replicas of Debian's
redis-server on loopback), and a primary failed over under load.

The fleet's keys are slot-tagged per pool, so every Lua script runs on the primary that owns
``{pool:local}``. That primary is SIGKILLed while joins keep coming; its replica takes over
after the node timeout (2 s). What the test shows, and what it reports (stdout, ``-s``):
joins fail (503, Retry-After) only while the slot has no primary; afterwards every lesson is
still with its worker under the same fence (anything the replica had not received is written
back by the worker, ``lesson.adopted``); fences never repeat; the avatar stays in its room.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis as redis_sync

from config.fleet import PoolKeys, avatar_identity
from scripts.failover import join, join_status
from scripts.room_probe import Learner
from scripts.servers import (
    AvatarWorkerProcess,
    LiveKitServer,
    RedisClusterServer,
    RouterProcess,
)

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
CLUSTER_ENV = {"AVATAR_REDIS_CLUSTER": "true"}


def _heartbeats(worker: AvatarWorkerProcess) -> str:
    """The worker's heartbeat events (failed, gap, restored), one per line."""
    return "\n".join(x for x in worker.logfile.read_text().splitlines()
                     if '"fleet.heartbeat' in x)


async def test_a_primary_fails_over_under_load_and_fencing_holds():
    with RedisClusterServer() as cluster, LiveKitServer() as lk:
        worker = AvatarWorkerProcess(lk, cluster.url, "cl-w", capacity=4, extra_env=CLUSTER_ENV)
        router = RouterProcess(lk, cluster.url, extra_env=CLUSTER_ENV)
        with worker, router:
            k = PoolKeys("local")
            lessons = ["cl-0", "cl-1", "cl-2"]
            before = {x: await asyncio.to_thread(join, router, x) for x in lessons}
            learner = Learner()
            await learner.join(lk, "cl-0", before["cl-0"]["token"])
            try:
                deadline = time.monotonic() + 30
                while avatar_identity("cl-0") not in {
                        p.identity for p in learner.room.remote_participants.values()}:
                    assert time.monotonic() < deadline, "the avatar joins on a cluster"
                    await asyncio.sleep(0.05)

                results: list[tuple[float, str, int, dict]] = []
                stop = asyncio.Event()

                async def load() -> None:
                    i = 0
                    while not stop.is_set():
                        lesson = lessons[i % len(lessons)]
                        code, body = await asyncio.to_thread(join_status, router, lesson)
                        results.append((time.monotonic(), lesson, code, body))
                        i += 1
                        await asyncio.sleep(0.02)

                loader = asyncio.create_task(load())
                await asyncio.sleep(1.0)
                primary = cluster.node_for_key(k.fence)
                primary.kill()
                t_kill = time.monotonic()
                await asyncio.sleep(12.0)
                stop.set()
                await loader

                after_kill = [r for r in results if r[0] >= t_kill]
                errors = [r for r in after_kill if r[2] != 200]
                ok_after = [r for r in after_kill if r[2] == 200]
                assert ok_after, "joins succeed again after the failover"
                outage = (max(r[0] for r in errors) - t_kill) if errors else 0.0
                print(f"\nfailover: {len(errors)} of {len(after_kill)} joins refused, "
                      f"last refusal {outage:.1f} s after the kill; codes "
                      f"{sorted({r[2] for r in errors})}; the worker's heartbeat:\n"
                      + _heartbeats(worker))
                assert {r[2] for r in errors} <= {503}, "refused with 503, never a 500"
                assert all(r[3].get("error") in ("redis_unavailable", "no_capacity",
                                                  "dispatch_failed") for r in errors)
                assert outage < 10, outage
                # fencing holds: each lesson kept its worker and fence (or moved up, never down)
                for lesson in lessons:
                    fences = {r[3]["fence"] for r in ok_after if r[1] == lesson}
                    assert min(fences) >= before[lesson]["fence"], (lesson, fences)
                    assert {r[3]["worker_id"] for r in ok_after if r[1] == lesson} == {"cl-w"}
                live = next(n for n in cluster.nodes if n.running)
                c = redis_sync.RedisCluster.from_url(live.url)
                rows = {x: c.hgetall(k.lesson(x)) for x in lessons}
                lost = [x for x, h in rows.items() if not h]
                print(f"lessons missing from Redis after the failover: {lost or 'none'}")
                assert not lost
                for x, h in rows.items():
                    assert h[b"worker"] == b"cl-w" and int(h[b"fence"]) == before[x]["fence"]
                # A new lesson needs the worker's heartbeat on the new primary (back ~4.5 s
                # after the kill here). A backend told 503 tries again after Retry-After (2 s);
                # each refusal is printed with the worker's heartbeat story, as the one CI run
                # that was refused here (body unknown then) should have been.
                for _ in range(3):
                    code, new = await asyncio.to_thread(join_status, router, "cl-new")
                    if code == 200:
                        break
                    print(f"new lesson refused {time.monotonic() - t_kill:.1f} s after the "
                          f"kill: {code} {new}\n" + _heartbeats(worker))
                    assert code == 503 and new.get("error") in (
                        "redis_unavailable", "no_capacity", "dispatch_failed"), (code, new)
                    await asyncio.sleep(2.0)
                assert code == 200, f"a new lesson after the failover: {code} {new}"
                assert new["fence"] > max(b["fence"] for b in before.values())
                present = {p.identity: p for p in learner.room.remote_participants.values()}
                assert avatar_identity("cl-0") in present, "the avatar stayed in its room"
            finally:
                await learner.leave()
