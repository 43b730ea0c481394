"""The Lua scripts against a real redis-server: affinity, least-loaded, capacity, draining,
stale workers, fences, release, home pointer and spill, sweep."""

from __future__ import annotations

import asyncio

import pytest

from config.fleet import FleetMember, PoolKeys, lesson_home_key
from router.store import FleetStore
from tests.router.conftest import TTL_S

pytestmark = pytest.mark.redis


@pytest.fixture
async def store(redis_client):
    s = FleetStore(redis_client, heartbeat_ttl_s=TTL_S, dispatch_lease_s=1.0)
    await s.scripts.load()
    return s


async def member(redis_client, wid, capacity=2, region="local"):
    m = FleetMember(redis_client, wid, region, capacity)
    await m.register()
    return m


async def test_scripts_loaded_once_and_reloaded_after_flush(store, redis_client):
    assert await store.scripts.loaded()
    await redis_client.script_flush()
    assert not await store.scripts.loaded()
    await member(redis_client, "w1")
    a = await store.assign("local", "l1")  # NOSCRIPT -> loads again, same SHA
    assert a.status == "ok" and await store.scripts.loaded()


async def test_affinity_and_idempotent_retries(store, redis_client):
    for w in ("w1", "w2", "w3"):
        await member(redis_client, w, capacity=5)
    first = await store.assign("local", "lesson-a")
    assert first.status == "ok" and first.changed and first.must_dispatch
    for _ in range(5):
        again = await store.assign("local", "lesson-a")
        assert (again.worker_id, again.fence) == (first.worker_id, first.fence)
        assert not again.changed
        assert not again.must_dispatch  # the claim is held by the first caller (lease)
    k = PoolKeys("local")
    assert await redis_client.zscore(k.workers_load, first.worker_id) == 1


async def test_least_loaded_choice(store, redis_client):
    for w in ("w1", "w2", "w3"):
        await member(redis_client, w, capacity=10)
    got = [(await store.assign("local", f"l{i}")).worker_id for i in range(9)]
    # every assign takes a worker with the fewest lessons: loads stay within one of each other
    assert sorted(got.count(w) for w in ("w1", "w2", "w3")) == [3, 3, 3]
    # a worker with fewer lessons is always the next pick
    await store.release("local", "l0", int(await redis_client.hget(
        PoolKeys("local").lesson("l0"), "fence")))
    nxt = await store.assign("local", "l-next")
    assert nxt.worker_id == got[0]


async def test_capacity_never_exceeded(store, redis_client):
    await member(redis_client, "w1", capacity=2)
    await member(redis_client, "w2", capacity=3)
    results = await asyncio.gather(*(store.assign("local", f"l{i}") for i in range(10)))
    ok = [a for a in results if a.status == "ok"]
    assert len(ok) == 5
    assert [a.status for a in results].count("full") == 5
    k = PoolKeys("local")
    assert await redis_client.scard(k.worker_lessons("w1")) == 2
    assert await redis_client.scard(k.worker_lessons("w2")) == 3


async def test_draining_worker_gets_nothing_new_but_keeps_its_lessons(store, redis_client):
    ms = {w: await member(redis_client, w, capacity=5) for w in ("w1", "w2")}
    a = await store.assign("local", "kept")
    holder = FleetMember(redis_client, a.worker_id, "local", 5)
    holder.epoch = 1
    await holder.drain(1)  # the worker's own drain (state=draining in its heartbeat)
    for i in range(4):
        b = await store.assign("local", f"new{i}")
        assert b.worker_id != a.worker_id
    assert (await store.assign("local", "kept")).worker_id == a.worker_id  # affinity kept
    # ops drain (field drain=1, never overwritten by a heartbeat) works the same way
    other = "w2" if a.worker_id == "w1" else "w1"
    await store.set_drain("local", other, True)
    await ms[other].heartbeat(0)  # its own heartbeat does not clear the ops drain
    assert (await store.assign("local", "nowhere")).status == "full"
    await store.set_drain("local", other, False)
    assert (await store.assign("local", "nowhere")).worker_id == other


async def test_stale_worker_skipped_and_lesson_moved_on_join(store, redis_client):
    await member(redis_client, "old", capacity=5)
    a = await store.assign("local", "l1")
    assert a.worker_id == "old"
    # "old" stops heartbeating; make its seen time older than the ttl
    k = PoolKeys("local")
    await redis_client.zadd(k.workers_seen, {"old": 1})
    assert (await store.assign("local", "l2")).status == "full"  # stale: not a candidate
    await member(redis_client, "new", capacity=5)
    b = await store.assign("local", "l1")  # its worker is dead: the join moves it
    assert b.worker_id == "new" and b.fence > a.fence and b.changed and b.must_dispatch
    assert not await redis_client.sismember(k.worker_lessons("old"), "l1")


async def test_fences_strictly_increase(store, redis_client):
    await member(redis_client, "w1", capacity=1000)
    fences = []
    for i in range(50):
        a = await store.assign("local", f"l{i}")
        fences.append(a.fence)
        if i % 3 == 0:  # releases do not lower fences
            assert (await store.release("local", f"l{i}", a.fence))[0] == "ok"
    assert all(b > a for a, b in zip(fences, fences[1:], strict=False))
    # a lesson reassigned after release gets a higher fence than it had
    again = await store.assign("local", "l0")
    assert again.fence > fences[-1]


async def test_release_requires_current_fence(store, redis_client):
    await member(redis_client, "w1", capacity=5)
    a = await store.assign("local", "l1")
    assert await store.release("local", "l1", a.fence - 1) == ("stale", a.fence)
    assert await store.release("local", "l1", a.fence + 1) == ("stale", a.fence)
    assert (await store.assign("local", "l1")).worker_id == "w1"  # still assigned
    assert await store.release("local", "l1", a.fence) == ("ok", a.fence)
    assert await store.release("local", "l1", a.fence) == ("missing", 0)
    k = PoolKeys("local")
    assert await redis_client.zscore(k.workers_load, "w1") == 0


async def test_fence_check_of_the_worker_contract(store, redis_client):
    """FleetMember.fence_is_current (the worker's request_fnc) agrees with assign/release."""
    from config.fleet import DispatchMetadata

    m = await member(redis_client, "w1", capacity=5)
    a = await store.assign("local", "l1")
    meta = DispatchMetadata(lesson_id="l1", worker_id="w1", fence=a.fence)
    assert await m.fence_is_current(meta)
    await store.release("local", "l1", a.fence)
    assert not await m.fence_is_current(meta)


async def test_dispatch_claim_one_holder_until_the_avatar_is_live(store, redis_client):
    m = await member(redis_client, "w1", capacity=5)
    a = await store.assign("local", "l1")
    assert a.must_dispatch and not a.live
    assert not (await store.assign("local", "l1")).must_dispatch
    await store.confirm("local", "l1", a.fence, ok=False)  # failed: claimable again at once
    b = await store.assign("local", "l1")
    assert b.must_dispatch and b.fence == a.fence
    await store.confirm("local", "l1", a.fence, ok=True, dispatch_id="AD_x")
    assert not (await store.assign("local", "l1")).must_dispatch, "LiveKit took it: wait"
    pending = PoolKeys("local").dispatch_pending
    assert await redis_client.zscore(pending, "l1") is not None, "watched until live"
    await asyncio.sleep(1.1)
    await m.heartbeat(0)
    # past the lease and no avatar came (LiveKit accepts dispatches it cannot place): again
    c = await store.assign("local", "l1")
    assert c.must_dispatch and c.fence == a.fence and not c.live
    await store.confirm("local", "l1", a.fence, ok=True, dispatch_id="AD_y")
    assert await m.report_session("l1", a.fence, "live") == "ok"  # the worker's avatar is in
    await store.confirm("local", "l1", a.fence, ok=True, dispatch_id="AD_late")  # stays live
    await asyncio.sleep(1.1)
    await m.heartbeat(0)
    d = await store.assign("local", "l1")
    assert d.live and not d.must_dispatch, "a live avatar is never dispatched again"
    assert await redis_client.zscore(pending, "l1") is None
    assert not await store.confirm("local", "l1", a.fence + 7, ok=True)  # wrong fence: ignored
    # the session was lost (LiveKit restarted under it): claimable again at once
    assert await m.report_session("l1", a.fence, "lost") == "ok"
    e = await store.assign("local", "l1")
    assert e.must_dispatch and not e.live
    # a stale fence is told to leave, and changes nothing
    assert await m.report_session("l1", a.fence - 1, "live") == "superseded"
    assert await m.report_session("nope", 1, "check") == "superseded"


async def test_home_pointer_spill_and_fences_across_pools(store, redis_client):
    await member(redis_client, "a1", capacity=1, region="east")
    await member(redis_client, "b1", capacity=5, region="west")
    p1 = await store.place("l1", ["east", "west"])
    assert p1.assignment.pool == "east"
    p2 = await store.place("l2", ["east", "west"])  # east full: spill to west
    assert p2.assignment.pool == "west" and p2.tried == ("east", "west")
    assert await redis_client.get(lesson_home_key("l2")) == b"west"
    # a retry with another preference still finds the lesson where it lives
    p3 = await store.place("l2", ["east", "west"])
    assert (p3.assignment.pool, p3.assignment.worker_id) == ("west", "b1")
    assert not p3.assignment.changed
    # the east worker dies and east is full: the lesson leaves east with a higher fence
    await redis_client.zadd(PoolKeys("east").workers_seen, {"a1": 1})
    p4 = await store.place("l1", ["east", "west"])
    assert p4.assignment.pool == "west" and p4.assignment.fence > p1.assignment.fence
    assert not await redis_client.exists(PoolKeys("east").lesson("l1"))


async def test_sweep_finds_dead_workers_and_fixes_load(store, redis_client):
    await member(redis_client, "live", capacity=4)
    await member(redis_client, "dead", capacity=4)
    await member(redis_client, "gone", capacity=4)
    k = PoolKeys("local")
    for i in range(4):
        await store.assign("local", f"l{i}")
    await redis_client.zadd(k.workers_seen, {"dead": 1, "gone": 1})
    await redis_client.srem(k.worker_lessons("gone"), *[f"l{i}" for i in range(4)])
    await redis_client.zadd(k.workers_load, {"live": 0})  # drift (as after a re-add at 0)
    dead, stale, live, cap, used = await store.sweep("local")
    lessons_of_dead = await redis_client.scard(k.worker_lessons("dead"))
    assert dead == (["dead"] if lessons_of_dead else [])
    assert live == 1 and cap == 4
    assert await redis_client.zscore(k.workers_load, "live") == await redis_client.scard(
        k.worker_lessons("live"))
    assert await redis_client.zscore(k.workers_seen, "gone") is None  # forgotten
    assert set(stale) == set()  # claims are younger than the lease


async def test_a_worker_back_in_livekit_has_its_unconfirmed_dispatches_sent_again(
        store, redis_client):
    """LiveKit answers a dispatch for an agent with no registered worker as taken and drops
    it: once the worker registers (again), its lessons not yet live are claimable at once,
    not after the lease; live ones and other workers' stay as they are."""
    m1 = await member(redis_client, "w1", capacity=5)
    a1 = await store.assign("local", "l1")  # w1: dispatched, LiveKit "took" it
    await store.confirm("local", "l1", a1.fence, ok=True, dispatch_id="AD_lost")
    a2 = await store.assign("local", "l2")  # w1: its avatar is live
    await store.confirm("local", "l2", a2.fence, ok=True, dispatch_id="AD_ok")
    assert await m1.report_session("l2", a2.fence, "live") == "ok"
    m2 = await member(redis_client, "w2", capacity=5)
    assert (await store.assign("local", "l3")).worker_id == "w2"  # the least loaded
    assert {(await store.assign("local", x)).worker_id for x in ("l1", "l2")} == {"w1"}
    assert not (await store.assign("local", "l1")).must_dispatch, "within the lease: wait"

    assert await m1.redispatch_unconfirmed() == 1
    again = await store.assign("local", "l1")
    assert again.must_dispatch and again.fence == a1.fence, "sent again now, same fence"
    assert (await store.assign("local", "l2")).live, "a live avatar is left alone"
    assert await m2.redispatch_unconfirmed() == 1  # its own l3 only
    assert (await store.assign("local", "l2")).live
