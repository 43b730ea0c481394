"""The router's side of the fleet state in Redis: the Lua scripts (loaded once, called by SHA)
and the placement of a lesson across pools (home pointer, spill by priority, fences that only
grow). The layout is :mod:`config.fleet`'s table."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from config.fleet import (
    CANARY_KEY,
    TRANSCRIPT_MAXLEN,
    PoolKeys,
    TranscriptEntry,
    lesson_home_key,
    lua_source,
    transcript_key,
)

LUA_DIR = Path(__file__).with_name("lua")
SCRIPTS = ("assign", "release", "confirm", "sweep", "move_home")
SHARED = ("release",)  # in config/lua: workers release the lessons whose rooms ended, too


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


class Scripts:
    """The router's Lua scripts: read from ``router/lua`` (and the ones workers share, from
    ``config/lua``) once, loaded into Redis once and called
    with ``EVALSHA``; a Redis that lost them (restart, ``SCRIPT FLUSH``) gets them again."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.source = {n: lua_source(n) if n in SHARED else
                       (LUA_DIR / f"{n}.lua").read_text(encoding="utf-8") for n in SCRIPTS}
        self.sha = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in self.source.items()}

    async def load(self) -> None:
        for name, src in self.source.items():
            sha = await self.redis.script_load(src)
            assert sha == self.sha[name]

    async def loaded(self) -> bool:
        return all(await self.redis.script_exists(*self.sha.values()))

    async def __call__(self, name: str, keys: list[str], args: list) -> list:
        try:
            return await self.redis.evalsha(self.sha[name], len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self.redis.evalsha(self.sha[name], len(keys), *keys, *args)


@dataclass(frozen=True)
class LessonOptions:
    """What the join that dispatches a lesson's avatar asked for, kept on the lesson (its Redis
    hash) so that a re-dispatch (a dead worker's lesson, a lost dispatch) asks for the same.
    Empty strings: not set (a later join cannot clear what an earlier one set)."""

    voice: str = ""  # the voice agent's identity
    output: str = ""  # "video" | "visemes"
    avatar: str = ""  # the avatar's asset id (config/avatars.py)


NO_OPTIONS = LessonOptions()


@dataclass(frozen=True)
class Assignment:
    status: str  # ok | full | skip
    pool: str
    worker_id: str
    fence: int
    must_dispatch: bool
    changed: bool
    live: bool = False  # the worker reported this fence's avatar in the room


@dataclass(frozen=True)
class Placement:
    """Where a lesson landed after trying its pools in order."""

    assignment: Assignment | None  # None: every pool was full
    tried: tuple[str, ...]


class FleetStore:
    def __init__(self, redis: Redis, heartbeat_ttl_s: float, dispatch_lease_s: float) -> None:
        self.redis = redis
        self.scripts = Scripts(redis)
        self.ttl_ms = int(heartbeat_ttl_s * 1000)
        self.lease_ms = int(dispatch_lease_s * 1000)
        # set by the router while Redis has just come back: workers' heartbeats could not land
        # while it was away, so a lesson's worker is not judged by them yet
        self.current_ttl_ms: int | None = None

    # --- one pool -----------------------------------------------------------------------------
    async def assign(self, pool: str, lesson_id: str, *, min_fence: int = 0,
                     opts: LessonOptions = NO_OPTIONS, expect_worker: str = "",
                     evict: bool = True, current_ttl_ms: int | None = None) -> Assignment:
        """``current_ttl_ms``: how fresh the lesson's current worker's heartbeat must be for it
        to keep the lesson (default :attr:`current_ttl_ms`, else the ttl)."""
        k = PoolKeys(pool)
        r = await self.scripts(
            "assign",
            [k.lesson(lesson_id), k.workers_load, k.workers_seen, k.fence, k.dispatch_pending],
            [lesson_id, self.ttl_ms, pool, min_fence, k.prefix, self.lease_ms, opts.voice,
             expect_worker, "1" if evict else "0",
             current_ttl_ms or self.current_ttl_ms or self.ttl_ms, opts.output, opts.avatar],
        )
        return Assignment(_s(r[0]), pool, _s(r[1]) or "", int(r[2]), bool(r[3]), bool(r[4]),
                          len(r) > 5 and bool(r[5]))

    async def release(self, pool: str, lesson_id: str, fence: int) -> tuple[str, int]:
        k = PoolKeys(pool)
        r = await self.scripts("release", [k.lesson(lesson_id), k.workers_load, k.dispatch_pending],
                               [lesson_id, fence, k.prefix])
        return _s(r[0]), int(r[1])

    async def confirm(self, pool: str, lesson_id: str, fence: int, ok: bool,
                      dispatch_id: str = "") -> bool:
        k = PoolKeys(pool)
        r = await self.scripts("confirm", [k.lesson(lesson_id), k.dispatch_pending],
                               [lesson_id, fence, "done" if ok else "failed", dispatch_id])
        return bool(r)

    async def sweep(self, pool: str, limit: int = 100, disconnected: set[str] | None = None,
                    grace_ms: int = 0) -> tuple[list[str], list[str], int, int, int]:
        """``disconnected``: workers whose Redis connection was seen to disappear
        (:mod:`router.liveness`); one of them silent for ``grace_ms`` is dead."""
        k = PoolKeys(pool)
        r = await self.scripts("sweep", [k.workers_load, k.workers_seen, k.dispatch_pending],
                               [self.ttl_ms, k.prefix, self.lease_ms, limit, grace_ms,
                                *sorted(disconnected or ())])
        return [_s(x) for x in r[0]], [_s(x) for x in r[1]], int(r[2]), int(r[3]), int(r[4])

    # --- the lesson's home ----------------------------------------------------------------------
    async def home(self, lesson_id: str) -> str | None:
        return _s(await self.redis.get(lesson_home_key(lesson_id)))

    async def lesson_options(self, pool: str, lesson_id: str) -> LessonOptions:
        """The options the lesson's joins asked for (:class:`LessonOptions`)."""
        v, o, a = await self.redis.hmget(PoolKeys(pool).lesson(lesson_id),
                                         ["voice_agent_identity", "output", "avatar"])
        return LessonOptions(_s(v) or "", _s(o) or "", _s(a) or "")

    async def lesson(self, lesson_id: str) -> tuple[str, dict[str, str]] | None:
        """(pool, lesson hash) of a lesson that is assigned, else None."""
        pool = await self.home(lesson_id)
        if not pool:
            return None
        h = await self.redis.hgetall(PoolKeys(pool).lesson(lesson_id))
        if not h:
            return None
        return pool, {_s(a): _s(b) for a, b in h.items()}

    async def transcript(self, lesson_id: str, limit: int = TRANSCRIPT_MAXLEN
                         ) -> list[TranscriptEntry]:
        """The lesson's transcript lines, oldest first (by when they started playing)."""
        rows = await self.redis.xrange(transcript_key(lesson_id), count=limit)
        lines = [TranscriptEntry.model_validate_json(raw) for _id, fields in rows
                 if (raw := fields.get(b"e") or fields.get("e"))]
        return sorted(lines, key=lambda e: e.start)

    async def place(self, lesson_id: str, pools: list[str], *,
                    opts: LessonOptions = NO_OPTIONS, min_fence: int = 0) -> Placement:
        """Assign a lesson in its home pool, else the first of ``pools`` (claimed atomically);
        when a pool is full, move the home to the next pool (compare-and-set) and try there."""
        home_key = lesson_home_key(lesson_id)
        old = _s(await self.redis.set(home_key, pools[0], nx=True, get=True))
        home = old or pools[0]
        order = [home] + [p for p in pools if p != home]
        tried: list[str] = []
        while order:
            pool = order.pop(0)
            tried.append(pool)
            a = await self.assign(pool, lesson_id, min_fence=min_fence, opts=opts)
            if a.status == "ok":
                return Placement(a, tuple(tried))
            min_fence = max(min_fence, a.fence)
            order = [p for p in order if p not in tried]
            if not order:
                break
            now = _s(await self.scripts("move_home", [home_key], [pool, order[0]]))
            if now != order[0]:  # someone else moved it meanwhile: follow them
                if now in tried:
                    break
                order = [now] + [p for p in order if p != now]
        return Placement(None, tuple(tried))

    async def forget_home(self, lesson_id: str, pool: str) -> None:
        """Drop the home pointer if it still names ``pool``."""
        await self.redis.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"
            " return 0", 1, lesson_home_key(lesson_id), pool)

    # --- canary ---------------------------------------------------------------------------------
    async def canary_percent(self) -> float:
        v = await self.redis.hget(CANARY_KEY, "percent")
        return float(v) if v is not None else 0.0

    async def set_canary_percent(self, percent: float) -> None:
        await self.redis.hset(CANARY_KEY, "percent", repr(float(percent)))

    # --- reading the fleet ---------------------------------------------------------------------
    async def workers(self, pool: str) -> list[dict]:
        k = PoolKeys(pool)
        seen = await self.redis.zrange(k.workers_seen, 0, -1, withscores=True)
        now_s, now_us = await self.redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        out = []
        for w, score in seen:
            wid = _s(w)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(k.worker(wid))
            pipe.scard(k.worker_lessons(wid))
            h, n = await pipe.execute()
            h = {_s(a): _s(b) for a, b in h.items()}
            age = now_ms - int(score)
            out.append({
                "worker_id": wid, "pool": pool, "region": h.get("region", pool),
                "state": h.get("state", "unknown"), "capacity": int(h.get("capacity", 0)),
                "load": int(n), "active": int(h.get("active", 0) or 0),
                "draining_by_ops": h.get("drain") == "1", "heartbeat_age_ms": age,
                "alive": age <= self.ttl_ms and h.get("state") != "stopped",
            })
        return out

    async def find_worker(self, worker_id: str, pools: list[str]) -> str | None:
        for pool in pools:
            if await self.redis.exists(PoolKeys(pool).worker(worker_id)):
                return pool
        return None

    async def set_drain(self, pool: str, worker_id: str, drain: bool) -> None:
        key = PoolKeys(pool).worker(worker_id)
        if drain:
            await self.redis.hset(key, "drain", "1")
        else:
            await self.redis.hdel(key, "drain")
