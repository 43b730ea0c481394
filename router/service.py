"""What the router does, independent of HTTP: choose pools, place lessons, dispatch avatars,
release, reconcile. Shared by the API handlers and the reconciler loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from dataclasses import dataclass

import aiohttp
from livekit import api
from redis.asyncio import Redis

from config.fleet import DispatchMetadata, canary_pool, pool_region
from config.logs import get_logger
from config.regions import RegionsConfig
from config.settings import Settings
from router.livekit import LiveKitClients
from router.liveness import ConnectionWatch
from router.metrics import RouterMetrics
from router.store import NO_OPTIONS, Assignment, FleetStore, LessonOptions

log = get_logger("router")

BUCKETS = 10_000


class NoCapacity(Exception):
    def __init__(self, tried: tuple[str, ...]) -> None:
        super().__init__(f"no capacity in pools {list(tried)}")
        self.tried = tried


class DispatchFailed(Exception):
    pass


class UnknownRegion(ValueError):
    pass


def canary_bucket(user_id: str) -> int:
    """A stable bucket 0..9999 of a user id (same user, same bucket, every router)."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % BUCKETS


@dataclass(frozen=True)
class JoinResult:
    assignment: Assignment
    region: str
    canary: bool
    result: str  # affinity | assigned | spilled


class Router:
    def __init__(self, settings: Settings, redis: Redis, metrics: RouterMetrics,
                 regions: RegionsConfig | None = None) -> None:
        self.settings = settings
        self.rs = settings.router
        self.redis = redis
        self.regions = regions or settings.regions()
        self.store = FleetStore(redis, settings.worker.heartbeat_ttl_s, self.rs.dispatch_lease_s)
        self.lk = LiveKitClients(self.regions.regions, self.rs.livekit_timeout_s)
        self.metrics = metrics
        self._canary = (0.0, -1.0)  # (percent, monotonic time read)
        self.livekit_urls = {r.name: r.livekit_url for r in self.regions.regions}
        self.liveness = ConnectionWatch(redis)

    # --- pools ----------------------------------------------------------------------------------
    def all_pools(self) -> list[str]:
        out = []
        for r in self.regions.by_priority():
            out += [r.name, canary_pool(r.name)]
        return out

    def region_order(self, hint: str | None, lat: float | None, lon: float | None) -> list[str]:
        if hint:
            try:
                first = self.regions.get(hint).name
            except KeyError:
                raise UnknownRegion(hint) from None
        elif lat is not None and lon is not None:
            first = self.regions.nearest(lat, lon).name
        else:
            first = self.regions.default
        return [first] + [r.name for r in self.regions.by_priority() if r.name != first]

    async def canary_percent(self) -> float:
        percent, at = self._canary
        now = time.monotonic()
        if at < 0 or now - at >= self.rs.canary_cache_s:
            percent = await self.store.canary_percent()
            self._canary = (percent, now)
            self.metrics.canary_percent.set(percent)
        return percent

    async def set_canary(self, percent: float) -> None:
        await self.store.set_canary_percent(percent)
        self._canary = (percent, time.monotonic())
        self.metrics.canary_percent.set(percent)

    async def pools_for(self, user_id: str, hint: str | None, lat: float | None,
                        lon: float | None) -> tuple[list[str], bool]:
        regions = self.region_order(hint, lat, lon)
        percent = await self.canary_percent()
        canary = percent > 0 and canary_bucket(user_id) < percent * BUCKETS / 100
        return ([canary_pool(regions[0])] if canary else []) + regions, canary

    # --- join -----------------------------------------------------------------------------------
    async def join(self, lesson_id: str, user_id: str, *, hint: str | None = None,
                   lat: float | None = None, lon: float | None = None,
                   opts: LessonOptions = NO_OPTIONS) -> JoinResult:
        pools, canary = await self.pools_for(user_id, hint, lat, lon)
        placement = await self.store.place(lesson_id, pools, opts=opts)
        a = placement.assignment
        if a is None:
            self.metrics.assignments.labels("full").inc()
            log.warning("assignment.full", lesson_id=lesson_id, pools=list(placement.tried))
            raise NoCapacity(placement.tried)
        result = "affinity" if not a.changed else ("assigned" if a.pool == pools[0] else "spilled")
        self.metrics.assignments.labels(result).inc()
        region = pool_region(a.pool)
        log.info("assignment", lesson_id=lesson_id, worker_id=a.worker_id, fence=a.fence,
                 region=region, pool=a.pool, result=result, dispatch=a.must_dispatch)
        if a.must_dispatch:
            await self.dispatch(a, lesson_id, opts)
        return JoinResult(a, region, a.pool.endswith("-canary"), result)

    async def dispatch(self, a: Assignment, lesson_id: str, opts: LessonOptions) -> None:
        """Dispatch the avatar for an assignment whose dispatch claim this caller holds."""
        region = pool_region(a.pool)
        meta = DispatchMetadata(lesson_id=lesson_id, worker_id=a.worker_id, fence=a.fence,
                                region=a.pool, voice_agent_identity=opts.voice or None,
                                output=opts.output or "video", avatar=opts.avatar or None)
        try:
            dispatch_id = await self.lk.dispatch(region, meta)
        except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.metrics.dispatches.labels("failed").inc()
            log.warning("dispatch.failed", lesson_id=lesson_id, worker_id=a.worker_id,
                        fence=a.fence, region=region, error=repr(exc))
            await self.store.confirm(a.pool, lesson_id, a.fence, ok=False)
            raise DispatchFailed(str(exc)) from exc
        self.metrics.dispatches.labels("ok").inc()
        await self.store.confirm(a.pool, lesson_id, a.fence, ok=True, dispatch_id=dispatch_id)
        log.info("dispatch", lesson_id=lesson_id, worker_id=a.worker_id, fence=a.fence,
                 region=region, pool=a.pool, dispatch_id=dispatch_id)

    # --- release --------------------------------------------------------------------------------
    async def release(self, lesson_id: str) -> dict:
        released, pool = False, None
        for _ in range(5):
            got = await self.store.lesson(lesson_id)
            if got is None:
                pool = await self.store.home(lesson_id)
                break
            pool, h = got
            status, _cur = await self.store.release(pool, lesson_id, int(h["fence"]))
            if status == "ok":
                released = True
                log.info("release", lesson_id=lesson_id, worker_id=h.get("worker"),
                         fence=int(h["fence"]), region=pool_region(pool), pool=pool)
                break
            if status == "missing":
                break
            # stale: the lesson moved between our read and the release; read again
        removed = False
        if pool:
            await self.store.forget_home(lesson_id, pool)
            region = pool_region(pool)
            if region in self.lk.regions:
                removed = await self.lk.remove_avatar(region, lesson_id)
        return {"lesson_id": lesson_id, "released": released, "avatar_removed": removed}

    # --- reconciler -----------------------------------------------------------------------------
    async def reconcile_once(self) -> dict[str, int]:
        """One pass over every pool: move the lessons of dead workers (new fence, new dispatch),
        retry dispatch claims older than the lease, refresh the pool gauges. Safe to run in
        every replica at once: each move is one Lua call that re-checks the lesson is still on
        the dead worker, so exactly one replica wins it and dispatches."""
        counts = {"moved": 0, "spilled": 0, "no_capacity": 0, "redispatched": 0,
                  "dead_worker": 0}
        warming = self._warming()
        swept = {}
        grace_ms = int(self.rs.disconnect_grace_s * 1000)
        gone_by: dict[str, set[str]] = {}
        for pool in self.all_pools():
            gone = gone_by[pool] = self.liveness.gone(pool) if grace_ms else set()
            dead, stale, live, cap, used = swept[pool] = await self.store.sweep(
                pool, disconnected=gone, grace_ms=grace_ms)
            # dealt with: dead ones are moved below; after the ttl, the ttl has the say
            self.liveness.forget(pool, gone & set(dead),
                                 older_than_s=self.settings.worker.heartbeat_ttl_s)
            region = pool_region(pool)
            self.metrics.live_workers.labels(pool, region).set(live)
            self.metrics.utilisation.labels(pool, region).set(used / cap if cap else 0.0)
        free = {pool: s[3] - s[4] for pool, s in swept.items()}
        await self.canary_percent()  # keeps router_canary_percent current between joins
        if warming:  # Redis just came back: a stale heartbeat says nothing yet
            log.info("reconcile.warming_up", seconds_left=round(warming, 1))
        for pool, (dead, stale, *_rest) in swept.items():
            if warming:
                # only a connection seen to go since Redis came back is evidence; claims wait
                dead, stale = [w for w in dead if w in gone_by[pool]], []
            for worker in dead:
                counts["dead_worker"] += 1
                lessons = await self.redis.smembers(f"{{pool:{pool}}}:worker:{worker}:lessons")
                for raw in lessons:
                    lesson_id = raw.decode() if isinstance(raw, bytes) else raw
                    await self._move(pool, lesson_id, worker, counts, free,
                                     disconnected=worker in gone_by[pool])
            for raw in stale:
                lesson_id = raw.decode() if isinstance(raw, bytes) else raw
                a = await self.store.assign(pool, lesson_id, evict=False)
                if a.status == "ok" and a.must_dispatch:
                    opts = await self.store.lesson_options(pool, lesson_id)
                    try:
                        await self.dispatch(a, lesson_id, opts)
                        counts["redispatched"] += 1
                    except DispatchFailed:
                        pass
                elif a.status != "ok":
                    # its worker is dead: the dead-worker pass moves it (and dispatches)
                    pass
        for action, n in counts.items():
            if n:
                self.metrics.reconciler.labels(action).inc(n)
        return counts

    def _warming(self) -> float:
        """Seconds left in which heartbeats cannot be trusted: Redis was away or restarted
        less than a ttl (plus one heartbeat) ago, so the workers' heartbeats could not land.
        Meanwhile nobody is declared dead and a lesson's worker keeps it
        (``store.current_ttl_ms``); 0 once they can be trusted."""
        changed = self.liveness.changed_at
        window = self.settings.worker.heartbeat_ttl_s + self.settings.worker.heartbeat_interval_s
        left = 0.0 if changed is None else max(0.0, window - (time.monotonic() - changed))
        self.store.current_ttl_ms = int((window + 60) * 1000) if left else None
        return left

    async def _move(self, pool: str, lesson_id: str, dead: str, counts: dict[str, int],
                    free: dict[str, int], disconnected: bool = False) -> None:
        opts = await self.store.lesson_options(pool, lesson_id)
        # spill only where the last sweep saw room; otherwise the lesson stays on the dead
        # worker (not evicted) and the next pass tries again
        others = [p for p in self.all_pools()
                  if p != pool and not p.endswith("-canary") and free.get(p, 0) > 0]
        # a worker whose connection went away is dead after the grace, not the ttl
        grace = int(self.rs.disconnect_grace_s * 1000)
        a = await self.store.assign(pool, lesson_id, opts=opts, expect_worker=dead,
                                    evict=bool(others),
                                    current_ttl_ms=grace if disconnected and grace else None)
        if a.status == "skip":
            return
        if a.status == "full":
            # evicted from this pool (no live capacity): spill to the other pools by priority
            if not others:
                counts["no_capacity"] += 1
                log.warning("reconcile.no_capacity", lesson_id=lesson_id, worker_id=dead,
                            region=pool_region(pool), pool=pool)
                return
            # the lesson's home is still this pool: place() moves it by compare-and-set
            placement = await self.store.place(lesson_id, [pool, *others], opts=opts,
                                               min_fence=a.fence)
            if placement.assignment is None:
                counts["no_capacity"] += 1
                log.warning("reconcile.no_capacity", lesson_id=lesson_id, worker_id=dead,
                            region=pool_region(pool), pool=pool)
                return
            a = placement.assignment
            counts["spilled"] += 1
        else:
            counts["moved"] += 1
        log.info("assignment", lesson_id=lesson_id, worker_id=a.worker_id, fence=a.fence,
                 region=pool_region(a.pool), pool=a.pool, result="moved", dead_worker=dead)
        if a.must_dispatch:
            # The dead worker's avatar may still be listed in the room. livekit-server (1.13.5)
            # keys agent jobs by participant identity: if the replacement (same identity) joins
            # first, removing the duplicate terminates the *replacement's* job. So the old
            # participant goes first, and its job is the one terminated.
            try:
                await self.lk.remove_avatar(pool_region(pool), lesson_id)
            except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("reconcile.remove_old_avatar_failed", lesson_id=lesson_id,
                            worker_id=dead, error=repr(exc))
            try:
                await self.dispatch(a, lesson_id, opts)
            except DispatchFailed:
                pass  # the claim is left open; the next pass retries it

    async def run_reconciler(self, stop: asyncio.Event) -> None:
        """Reconcile every ``reconcile_interval_s`` (jittered, so replicas do not tick in
        lockstep); at once when a worker's Redis connection disappears, then every 0.2 s until
        the grace tells whether it is dead."""
        interval = self.rs.reconcile_interval_s
        watch = asyncio.create_task(self.liveness.run(stop), name="liveness")
        try:
            while not stop.is_set():
                self.liveness.wake.clear()
                try:
                    await self.reconcile_once()
                except Exception as exc:  # Redis down etc.: keep going, try again next tick
                    log.warning("reconcile.error", error=repr(exc))
                    self.liveness.changed_at = time.monotonic()
                timeout = (min(0.2, interval) if self.liveness.pending
                           else interval * random.uniform(0.8, 1.2))
                waits = [asyncio.ensure_future(stop.wait()),
                         asyncio.ensure_future(self.liveness.wake.wait())]
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
