"""The contract between avatar workers and routers, written once.

Redis layout (one pool per region; every key of a pool shares the hash tag ``{pool:<region>}``
so that each Lua script touches one cluster slot):

=============================  ======  =====================================================
key                            type    meaning
=============================  ======  =====================================================
``{pool:R}:workers:load``      zset    worker id -> lessons assigned (active + reserved)
``{pool:R}:workers:seen``      zset    worker id -> last heartbeat, ms of Redis ``TIME``
``{pool:R}:worker:<id>``       hash    capacity, state, epoch, region, active, seen_ms (the
                                       worker's heartbeat); drain (ops), lessons_epoch (router)
``{pool:R}:worker:<id>:lessons`` set   lesson ids assigned to the worker (for the reconciler)
``{pool:R}:lesson:<id>``       hash    worker, fence, epoch (the worker's at assignment), pool,
                                       assigned_at, voice_agent_identity,
                                       dispatch_fence, dispatch_state (pending: being
                                       dispatched | done: LiveKit took it | live: the
                                       worker's avatar is in the room), dispatch_at (ms),
                                       dispatch_id, live_at (ms)
``{pool:R}:fence``             string  fence counter (INCR); fences only grow (and a lesson that
                                       moves to another pool gets a fence above its old one)
``{pool:R}:dispatch:pending``  zset    lesson id -> ms its dispatch was claimed (or done); the
                                       router's reconciler re-dispatches the ones not live
                                       within the lease
``lesson-home:<id>``           string  the pool that serves the lesson (claimed ``SET NX``,
                                       moved by compare-and-set when a pool is full); the
                                       lesson's hash lives in that pool
``router:canary``              hash    ``percent`` (0-100) of user buckets sent to canary pools
``{lesson:<id>}:transcript``   stream  the lesson's transcript (:class:`TranscriptEntry` as JSON
                                       in field ``e``), written by its worker, read by routers;
                                       expires a week after its last line
=============================  ======  =====================================================

A pool is a region (``R``) or its canary (``R-canary``, :func:`canary_pool`): canary workers
heartbeat with ``FleetMember(redis, id, canary_pool(region), capacity)`` and join the region's
LiveKit. The ``drain`` field of ``worker:<id>`` (``1``) is set by ops through the router
(``POST /v1/workers/<id>/drain``); heartbeats never overwrite it, assign skips such a worker, and
a worker may watch it to start draining itself. A worker that registers again under the same
id (new ``epoch``) is a new process: the lessons it had under the old epoch get new fences and
new dispatches (its old jobs are gone).

A worker heartbeats every ``heartbeat_interval_s`` with :func:`heartbeat` (Lua, Redis time);
a router treats a worker whose ``seen`` is older than ``heartbeat_ttl_s`` as dead.

Dispatch: the router dispatches the avatar to the agent name :func:`agent_name` with
:class:`DispatchMetadata` as the job metadata; the worker's ``request_fnc`` accepts the job only
while its fence is still the lesson's current fence in Redis (:func:`fence_is_current`).
The loop is closed by the worker (``session.lua``): once its avatar is in the room it reports
the lesson ``live``; a session that ends while its room lives on (LiveKit restarted, the avatar
was displaced) reports it ``lost`` and the router dispatches again at once; and a worker that
finds a lesson's fence superseded (:meth:`FleetMember.check_lessons`, every heartbeat) leaves
that room, so a worker that was frozen past its TTL never competes with its replacement; one
that finds a lesson missing (Redis restarted without its data) writes it back (``adopt``), so
the fleet's state is rebuilt from the workers within a heartbeat.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from config.avatars import AVATAR_ID_PATTERN
from config.voices import ESPEAK_VARIANTS, SAY_LANGUAGES, VOICES, check_voice

LUA_DIR = Path(__file__).with_name("lua")
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

# --- LiveKit names: the stock avatar protocol (livekit-agents DataStreamAudioOutput) ---------
AUDIO_STREAM_TOPIC = "lk.audio_stream"
RPC_CLEAR_BUFFER = "lk.clear_buffer"
RPC_PLAYBACK_STARTED = "lk.playback_started"
RPC_PLAYBACK_FINISHED = "lk.playback_finished"
ATTR_PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
# --- our own additions ---------------------------------------------------------------------
RPC_SAY = "avatar.say"  # payload: SayRequest JSON; makes the avatar speak lesson text
SAY_TOPIC = "avatar.say"
# The avatar's viseme weights per frame, tied to its audio (protocol: docs/viseme-stream.md)
VISEME_TOPIC = "avatar.visemes"
"""Data-packet topic of lesson text: the router (not a room participant) sends a reliable
``RoomService.send_data`` to ``destination_identities=[avatar_identity(lesson)]`` with a
:class:`SayRequest` JSON payload; the worker listens for packets on this topic."""
CANARY_SUFFIX = "-canary"
CANARY_KEY = "router:canary"
AVATAR_AUDIO_TRACK = "avatar_audio"
AVATAR_VIDEO_TRACK = "avatar_video"


def valid_id(value: str) -> bool:
    """Lesson and worker ids: 1-64 of ``A-Z a-z 0-9 _ -``."""
    return bool(_ID_RE.match(value))


WORKER_CLIENT_PREFIX = "avatar-worker:"


def worker_client_name(pool: str, worker_id: str) -> str:
    """The name a worker's Redis connections carry (``CLIENT SETNAME``): the reconciler reads
    ``CLIENT LIST`` to see at once that a killed worker's connection is gone."""
    return f"{WORKER_CLIENT_PREFIX}{pool}:{worker_id}"


def parse_worker_client_name(name: str) -> tuple[str, str] | None:
    """``(pool, worker id)`` of a worker's connection name, else None."""
    if not name.startswith(WORKER_CLIENT_PREFIX):
        return None
    pool, _, worker = name[len(WORKER_CLIENT_PREFIX):].rpartition(":")
    return (pool, worker) if pool and worker else None


def agent_name(worker_id: str) -> str:
    """The unique agent name a worker registers under, so an explicit dispatch reaches it alone."""
    return f"avatar-{worker_id}"


def canary_pool(region: str) -> str:
    """The canary pool of a region (its workers run the version being rolled out)."""
    return region + CANARY_SUFFIX


def pool_region(pool: str) -> str:
    """The region a pool belongs to (its LiveKit deployment)."""
    return pool.removesuffix(CANARY_SUFFIX)


def lesson_home_key(lesson_id: str) -> str:
    """Which pool serves a lesson (a string key outside the pools, see the table above)."""
    return f"lesson-home:{lesson_id}"


LESSON_ROOM_PREFIX = "lesson-"


def room_name(lesson_id: str) -> str:
    return f"{LESSON_ROOM_PREFIX}{lesson_id}"


def avatar_identity(lesson_id: str) -> str:
    """Stable per lesson: a re-dispatched avatar replaces a dead one's participant."""
    return f"avatar-{lesson_id}"


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class DispatchMetadata(BaseModel):
    """What a router puts in an explicit dispatch's metadata (JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    lesson_id: str = Field(pattern=ID_PATTERN)
    worker_id: str = Field(pattern=ID_PATTERN)
    fence: int = Field(ge=1)
    region: str | None = None
    voice_agent_identity: str | None = None
    output: Literal["video", "visemes"] = "video"  # visemes: audio + viseme stream, no video
    # the avatar's asset id (config.avatars), fetched from the router; none: the default tutor
    avatar: str | None = Field(None, pattern=AVATAR_ID_PATTERN)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True, exclude_defaults=True)

    @classmethod
    def from_json(cls, data: str | bytes) -> DispatchMetadata:
        return cls.model_validate_json(data)


# What lesson text may be spoken in: the voices and languages of config/voices.py (each checked
# against the engines in tests/pipeline). Anything else is refused before it is sent, rather
# than accepted and never said.
SAY_VOICES = ESPEAK_VARIANTS  # the espeak-ng variants (every voice: config.voices.VOICES)
# ~60 s of speech: a lesson's paragraph, not a lecture that blocks the agent's next reply
SAY_MAX_CHARS = 1000


class SayRequest(BaseModel):
    """Payload of :data:`RPC_SAY` and the router's ``/say``."""

    text: str = Field(min_length=1, max_length=SAY_MAX_CHARS)
    language: str = Field("en", description=f"one of {', '.join(SAY_LANGUAGES)}")
    voice: str | None = Field(None, description=(
        f"one of {', '.join(VOICES)} (GET /v1/voices), speaking the language; none: the "
        "language's default voice"))

    @field_validator("language")
    @classmethod
    def _spoken_language(cls, v: str) -> str:
        if v.lower() not in SAY_LANGUAGES:
            raise ValueError(f"no voice speaks {v!r}; languages: {', '.join(SAY_LANGUAGES)}")
        return v.lower()

    @field_validator("voice")
    @classmethod
    def _known_voice(cls, v: str | None, info: ValidationInfo) -> str | None:
        check_voice(v, info.data.get("language", "en"))
        return v


# A lesson's transcript: one Redis stream per lesson, written by the worker serving it (field
# ``e``: a TranscriptEntry as JSON), read by the router's GET /v1/lessons/{id}/transcript. Its
# own hash tag, not the pool's: it outlives the lesson's assignment and any move between pools.
TRANSCRIPT_MAXLEN = 5000  # entries kept per lesson (approximate trimming)
TRANSCRIPT_TTL_S = 7 * 24 * 3600  # kept this long after the lesson's last line


def transcript_key(lesson_id: str) -> str:
    return "{lesson:" + lesson_id + "}:transcript"


class TranscriptEntry(BaseModel):
    """One line of a lesson's transcript: what was said, by whom, and when it played (Unix
    seconds, the worker's clock)."""

    speaker: Literal["tutor", "learner"]
    identity: str = Field(description="the participant who spoke (the avatar for lesson text)")
    start: float
    end: float
    text: str
    language: str | None = None
    source: Literal["say", "voice_agent", "captions"] = Field(
        description="say: lesson text our TTS spoke; voice_agent: the voice agent's own "
                    "transcription; captions: the worker's captions of a learner")


@dataclass(frozen=True)
class PoolKeys:
    """Every Redis key of one region's pool."""

    region: str

    @property
    def tag(self) -> str:
        return "{pool:" + self.region + "}"

    @property
    def workers_load(self) -> str:
        return f"{self.tag}:workers:load"

    @property
    def workers_seen(self) -> str:
        return f"{self.tag}:workers:seen"

    @property
    def fence(self) -> str:
        return f"{self.tag}:fence"

    def worker(self, worker_id: str) -> str:
        return f"{self.tag}:worker:{worker_id}"

    def worker_lessons(self, worker_id: str) -> str:
        return f"{self.tag}:worker:{worker_id}:lessons"

    def lesson(self, lesson_id: str) -> str:
        return f"{self.tag}:lesson:{lesson_id}"

    @property
    def dispatch_pending(self) -> str:
        return f"{self.tag}:dispatch:pending"

    @property
    def prefix(self) -> str:
        """``{pool:R}:``, for Lua scripts that build worker keys of the same pool (same slot)."""
        return f"{self.tag}:"


def lua_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


@dataclass
class WorkerStatus:
    """What one heartbeat says."""

    worker_id: str
    region: str
    capacity: int
    active: int
    state: WorkerState
    epoch: int


class FleetMember:
    """A worker's side of the contract: register once, heartbeat every second, drain, leave.

    Uses a ``redis.asyncio.Redis`` client. The heartbeat script is loaded once and called by SHA
    (``Script`` reloads it if Redis was restarted).
    """

    def __init__(self, redis, worker_id: str, region: str, capacity: int) -> None:
        if not valid_id(worker_id):
            raise ValueError(f"worker id {worker_id!r} must match {ID_PATTERN}")
        self.redis = redis
        self.keys = PoolKeys(region)
        self.worker_id = worker_id
        self.region = region
        self.capacity = capacity
        self.epoch = 0
        self.state = WorkerState.STARTING
        self.data_lost = False  # set by heartbeat, cleared by whoever rebuilds from it
        self._script = redis.register_script(lua_source("heartbeat"))
        self._release = redis.register_script(lua_source("release"))
        self._session = redis.register_script(lua_source("session"))
        self._redispatch = redis.register_script(lua_source("redispatch"))

    async def register(self) -> int:
        """Start a new epoch for this worker id (a restart is a new epoch) and heartbeat."""
        self.epoch = int(await self.redis.hincrby(self.keys.worker(self.worker_id), "epoch", 1))
        self.state = WorkerState.SERVING
        await self.heartbeat(0)
        return self.epoch

    async def heartbeat(self, active: int) -> int:
        """Write capacity/state/active; returns Redis time in ms. Sets :attr:`data_lost` when
        this worker's own hash had vanished (Redis restarted without its data)."""
        k = self.keys
        now_ms, existed = await self._script(
            keys=[k.worker(self.worker_id), k.workers_seen, k.workers_load],
            args=[self.worker_id, self.capacity, str(self.state), self.epoch, self.region, active],
        )
        if not existed:
            self.data_lost = True
        return int(now_ms)

    async def drain(self, active: int) -> None:
        """Mark draining first: routers stop assigning before anything else happens."""
        self.state = WorkerState.DRAINING
        await self.heartbeat(active)

    async def leave(self) -> None:
        self.state = WorkerState.STOPPED
        await self.heartbeat(0)
        await self.redis.zrem(self.keys.workers_seen, self.worker_id)

    async def release_lesson(self, lesson_id: str, fence: int) -> str:
        """The lesson's room ended on its own (everyone left, or it was closed): free its seat,
        as the router's release does, only while ``fence`` is still current (a lesson that
        moved elsewhere is not touched). Returns ``ok``, ``stale`` or ``missing``."""
        k = self.keys
        status, _cur = await self._release(
            keys=[k.lesson(lesson_id), k.workers_load, k.dispatch_pending],
            args=[lesson_id, fence, k.prefix])
        status = status.decode() if isinstance(status, bytes) else status
        if status == "ok":  # and its home pointer, if it still names this pool
            await self.redis.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1])"
                " end return 0", 1, lesson_home_key(lesson_id), self.keys.region)
        return status

    async def report_session(self, lesson_id: str, fence: int, what: str,
                             voice: str | None = None) -> str:
        """``live`` / ``lost`` / ``adopt`` (see ``config/lua/session.lua``); returns ``ok``,
        ``adopted`` or ``superseded`` (leave the room)."""
        k = self.keys
        r = await self._session(
            keys=[k.lesson(lesson_id), k.dispatch_pending, k.worker_lessons(self.worker_id),
                  k.workers_load, k.worker(self.worker_id)],
            args=[lesson_id, fence, self.worker_id, what, self.region, voice or ""])
        r = r.decode() if isinstance(r, bytes) else r
        if r == "adopted":  # and its home pointer, unless a router already placed it
            await self.redis.set(lesson_home_key(lesson_id), self.region, nx=True)
        return r

    async def redispatch_unconfirmed(self) -> int:
        """Just registered with LiveKit: reopen this worker's dispatches that are not confirmed
        live, so the router sends them again now (``config/lua/redispatch.lua``)."""
        k = self.keys
        return int(await self._redispatch(
            keys=[k.worker_lessons(self.worker_id), k.dispatch_pending],
            args=[self.worker_id, k.prefix]))

    async def check_lessons(self, lessons: dict[str, int]) -> dict[str, str]:
        """Of ``lesson id -> fence`` held here: ``ok`` (still ours), ``superseded`` (the lesson
        names another worker or fence: leave) or ``missing`` (Redis lost it: adopt it)."""
        ids = list(lessons)
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as p:
            for lesson in ids:
                p.hmget(self.keys.lesson(lesson), "worker", "fence")
            rows = await p.execute()
        out = {}
        for lesson, (worker, fence) in zip(ids, rows, strict=True):
            w = worker.decode() if isinstance(worker, bytes) else worker
            f = fence.decode() if isinstance(fence, bytes) else fence
            out[lesson] = ("missing" if w is None else
                           "ok" if w == self.worker_id and f == str(lessons[lesson])
                           else "superseded")
        return out

    async def fence_is_current(self, meta: DispatchMetadata) -> bool:
        """True when the dispatch's fence is still the lesson's current one and names us."""
        row = await self.redis.hmget(self.keys.lesson(meta.lesson_id), "worker", "fence")
        worker, fence = (v.decode() if isinstance(v, bytes) else v for v in row)
        return worker == meta.worker_id == self.worker_id and fence == str(meta.fence)
