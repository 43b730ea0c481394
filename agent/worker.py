"""The avatar worker process: a livekit-agents ``AgentServer`` that is also a fleet member.

* registers under the unique agent name ``avatar-<worker_id>`` (explicit dispatch only);
* heartbeats into its region's Redis pool every ``heartbeat_interval_s`` (config/fleet.py);
* ``load_fnc``: lessons held against capacity, scaled under LiveKit's dispatch gate (see
  :meth:`AvatarServer.current_load`; CPU load is the wrong signal for a GPU worker);
* ``request_fnc`` accepts a job only while its fence is the lesson's current one in Redis, and
  joins as the avatar participant (``avatar_identity(lesson)``, ``lk.publish_on_behalf``);
* SIGTERM (the CLI calls :meth:`drain`): mark draining in Redis first, accept nothing new, let
  running lessons finish, then leave the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable

from livekit.agents import AgentServer, JobExecutorType, JobRequest
from pydantic import ValidationError

from agent.avatars import LessonAvatars
from agent.captions import load_captions
from agent.pod import PodDeletionCost
from agent.reregister import Reregistration, health_url
from agent.transcript import TranscriptWriter
from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.avatar.fit import fit_asset
from avatar_pipeline.engine import AvatarEngine, EngineConfig
from avatar_pipeline.neural import ModelSignatureError, load_model
from avatar_pipeline.tts.voices import engine_for
from config.fleet import (
    ATTR_PUBLISH_ON_BEHALF,
    DispatchMetadata,
    FleetMember,
    agent_name,
    avatar_identity,
    worker_client_name,
)
from config.logs import get_logger, setup_logging
from config.metrics import counter, gauge, start_metrics_server
from config.redis_client import REDIS_ERRORS
from config.redis_client import connect as connect_redis
from config.settings import Settings, SettingsError

log = get_logger("agent.worker")

JOBS = counter("avatar_jobs_total", "Dispatches seen by this worker, by outcome", ("result",))
SUPERSEDED = counter("avatar_sessions_superseded_total",
                     "Sessions this worker left because their lesson's fence moved on")
SESSIONS = gauge("avatar_sessions_active", "Avatar sessions running on this worker")
CAPACITY = gauge("avatar_worker_capacity", "Lessons this worker takes at most")
GPU_MEMORY = gauge("avatar_gpu_memory_bytes", "GPU memory held by this worker's torch (GPU only)")
GPU_MEMORY_TOTAL = gauge("avatar_gpu_memory_total_bytes", "Memory of this worker's GPU (GPU only)")


def _gpu_memory() -> tuple[int, int] | None:
    """(allocated by torch, the device's total) on a GPU worker, else None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.memory_allocated()), int(
        torch.cuda.get_device_properties(0).total_memory)


def retry_delay(failed: int, interval: float) -> float:
    """The pause before the next heartbeat after ``failed`` ones in a row: 0.25 s, then 0.5 s
    (never more than the interval), jittered. A heartbeat lands within half a second of Redis
    being back (a cluster's fail-over, a restart), and a fleet does not knock on a refusing
    Redis all in step."""
    return min(interval, 0.5, 0.25 * 2 ** (failed - 1)) * random.uniform(0.75, 1.0)


class AvatarServer(AgentServer):
    """AgentServer + fleet membership. Build it with :func:`build_server`."""

    def __init__(self, settings: Settings, **kwargs) -> None:
        self.settings = settings
        settings.voices.install()  # the voices lesson text may name, and each language's default
        self.worker_id = settings.worker.resolved_id()
        self.capacity = settings.worker.capacity
        self.target_load = settings.worker.livekit_target_load
        super().__init__(
            ws_url=settings.livekit.url,
            api_key=settings.livekit.api_key,
            api_secret=settings.livekit.api_secret.get_secret_value(),
            load_fnc=self.current_load,
            # The router holds capacity in Redis and dispatches only within it; the SDK's own
            # gate would wrongly refuse a second dispatch arriving while the first is decided
            # (it counts a reserved slot as the whole threshold with no idle processes), and
            # LiveKit drops a refused explicit dispatch. Capacity is checked in on_request.
            load_threshold=math.inf,
            **kwargs,
        )
        self.redis = connect_redis(
            settings.redis_url, settings.redis_cluster,
            timeout_s=settings.worker.redis_timeout_s,
            client_name=worker_client_name(settings.region, self.worker_id))
        self.fleet = FleetMember(self.redis, self.worker_id, settings.region, self.capacity)
        self.log = log.bind(worker_id=self.worker_id, region=settings.region)
        self._heartbeat_task: asyncio.Task | None = None
        self._drain_task: asyncio.Task | None = None
        self._lessons: dict[str, int] = {}  # lesson id -> fence, of sessions running here
        # lesson id -> (fence, shutdown of its job, called on the worker's loop)
        self._sessions: dict[str, tuple[int, Callable[[str], None]]] = {}
        self._voices: dict[str, str] = {}  # lesson id -> its voice agent's identity
        self._engine: AvatarEngine | None = None
        self.avatars: LessonAvatars | None = None  # with the engine
        self._serving = False  # set once the engine is up and the worker is in its pool
        # on Kubernetes, the pod's deletion cost follows its sessions (agent/pod.py)
        self._pod = PodDeletionCost.in_cluster() if settings.worker.pod_deletion_cost else None
        self._tasks: set[asyncio.Task] = set()
        self.on("worker_registered", self._on_registered)

    @property
    def engine(self) -> AvatarEngine:
        """The one engine (models, compositor, tick thread) all sessions of this worker share."""
        if self._engine is None:
            raise RuntimeError("the engine starts with the worker (run())")
        return self._engine

    # -- load and membership ---------------------------------------------------------------
    @property
    def active_sessions(self) -> int:
        return len(self.active_jobs)

    def current_load(self, _server: AgentServer | None = None) -> float:
        """What LiveKit is told. livekit-server offers a job only to a worker whose reported
        load is under its ``agents.target_load`` (0.7 by default), so sessions / capacity would
        starve a worker of capacity 4 at 3 lessons. The router holds capacity (Redis) and
        :meth:`on_request` enforces it; the gate must never refuse a dispatch made within it,
        even on a load reported up to 0.5 s late (a seat freed in Redis before LiveKit hears).
        So the lessons held, plus one, share the gate: a full worker still reads under it."""
        held = len(self._lessons)
        return self.target_load * min(held, self.capacity) / (self.capacity + 1)

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        # The livekit-agents CLI adds its own root handler before calling run(): put ours back
        # so that every line (ours and the SDK's) is written once, as structlog JSON.
        setup_logging(self.settings.log_level, self.settings.log_format)
        self._loop = asyncio.get_running_loop()
        if self.settings.metrics_port:
            start_metrics_server(self.settings.metrics_port)
            self.log.info("metrics.serving", port=self.settings.metrics_port)
        self._engine = await asyncio.to_thread(make_engine, self.settings)
        self.avatars = LessonAvatars(self._engine, self.settings.worker)
        if self.settings.worker.captions:  # a missing extra stops the worker at start
            await load_captions(self.settings.worker.captions_model)
        # the English lesson voice, loaded now rather than at the first /say (or logged as
        # unavailable: espeak-ng speaks instead)
        await asyncio.to_thread(engine_for, None, "en")
        self.log.info("engine.started", backend=self._engine.config.backend,
                      fps=self._engine.config.fps, size=[self._engine.width, self._engine.height])
        await self.fleet.register()
        CAPACITY.set(self.capacity)
        self.log.info("fleet.registered", epoch=self.fleet.epoch, capacity=self.capacity,
                      agent_name=agent_name(self.worker_id))
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="fleet-heartbeat")
        self._serving = True
        # back in LiveKit the moment it answers after an outage, not on the SDK's backoff
        rereg = asyncio.create_task(Reregistration(
            self, health_url(self.settings.livekit.url)).run(), name="livekit-reregistration")
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        finally:
            rereg.cancel()
            await self._stop_heartbeat()

    def _on_registered(self, *_info) -> None:
        """Registered with LiveKit (at start, and again after LiveKit came back): dispatches
        LiveKit got for us meanwhile were dropped; have the router send them again now."""
        task = asyncio.get_running_loop().create_task(self._redispatch_unconfirmed())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redispatch_unconfirmed(self) -> None:
        try:
            n = await self.fleet.redispatch_unconfirmed()
        except REDIS_ERRORS as exc:  # the reconciler still retries them after the lease
            self.log.warning("fleet.redispatch_failed", error=str(exc))
            return
        if n:
            self.log.info("fleet.redispatch_requested", lessons=n,
                          why="registered with LiveKit; earlier dispatches were dropped")

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.worker.heartbeat_interval_s
        ttl = self.settings.worker.heartbeat_ttl_s
        last_ok = time.monotonic()
        failed = 0  # heartbeats that could not land since the last one that did
        while True:
            t_try = time.monotonic()
            try:
                gap = time.monotonic() - last_ok
                if gap > ttl:  # frozen, or cut off from Redis: our lessons may have moved
                    self.log.warning("fleet.heartbeat_gap", gap_s=round(gap, 1), ttl_s=ttl)
                    # leave the rooms of lessons given away first: a resumed session's WebRTC
                    # reconnect would take the room from their replacements (same identity)
                    await self._check_lessons()
                await self.fleet.heartbeat(self.active_sessions)
            except REDIS_ERRORS as exc:
                # Keep serving the lessons we have; the router will see us as stale if this lasts.
                failed += 1
                self.log.warning("fleet.heartbeat_failed", error=str(exc) or repr(exc),
                                 took_s=round(time.monotonic() - t_try, 2))
                await asyncio.sleep(retry_delay(failed, interval))
                continue
            except Exception:  # a bug here must not stop the heartbeat (the fleet would move
                self.log.exception("fleet.heartbeat_error")  # every lesson off this worker)
                await asyncio.sleep(interval)
                continue
            if failed:  # how long routers saw no heartbeat from us: ops read it beside the
                # Redis outage that caused it
                self.log.info("fleet.heartbeat_restored", failed=failed,
                              away_s=round(time.monotonic() - last_ok, 2))
                failed = 0
            last_ok = time.monotonic()
            try:
                await self._after_heartbeat()
            except REDIS_ERRORS as exc:  # the heartbeat landed; the checks run again next time
                self.log.warning("fleet.check_failed", error=str(exc) or repr(exc))
            except Exception:
                self.log.exception("fleet.check_error")
            await asyncio.sleep(interval)

    async def _after_heartbeat(self) -> None:
        """What the worker looks at on each heartbeat: its lessons' fences, the gauges, the
        pod's deletion cost, and whether ops asked it to drain."""
        await self._check_lessons()
        SESSIONS.set(self.active_sessions)
        if self._pod is not None:
            await self._pod.update(self.active_sessions)
        if (gpu := _gpu_memory()) is not None:
            GPU_MEMORY.set(gpu[0])
            GPU_MEMORY_TOTAL.set(gpu[1])
        if (self._drain_task is None and await self.redis.hget(
                self.fleet.keys.worker(self.worker_id), "drain") == b"1"):
            self.log.info("fleet.drain_requested_by_ops")
            self._drain_task = asyncio.create_task(self.drain())

    async def _check_lessons(self) -> None:
        """Leave every room whose lesson's fence moved on (the router gave the lesson to
        another worker, e.g. while this one was frozen past its TTL): the replacement avatar
        has the same identity, and two sessions under one identity end with neither. Write
        back the lessons Redis lost (restarted without its data), as this worker's."""
        held = dict(self._lessons)
        adopt = self.fleet.data_lost  # cleared once every lost lesson is written back: a Redis
        # error on the way leaves it set, so the next heartbeat's check adopts them still
        for lesson, status in (await self.fleet.check_lessons(held)).items():
            # missing: released (the router removes the avatar; our release is on its way), or
            # lost with Redis's data, which is written back
            if status == "missing" and adopt:
                status = await self.fleet.report_session(lesson, held[lesson], "adopt",
                                                         self._voices.get(lesson))
                if status == "adopted":
                    self.log.warning("lesson.adopted", lesson_id=lesson, fence=held[lesson],
                                     why="missing from Redis")
            if status != "superseded":
                continue
            fence = self._lessons.pop(lesson, None)
            SUPERSEDED.inc()
            self.log.warning("lesson.superseded", lesson_id=lesson, fence=fence,
                             action="leaving the room")
            if (s := self._sessions.pop(lesson, None)) is not None:
                s[1]("fence superseded")
        if adopt:
            self.fleet.data_lost = False

    async def _stop_heartbeat(self) -> None:
        if self._heartbeat_task:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
            self._heartbeat_task = None
        if self._pod is not None:
            await self._pod.aclose()

    async def drain(self, timeout=None) -> None:  # type: ignore[override]  # noqa: ASYNC109
        """Mark draining in Redis first (routers stop assigning), then let lessons finish."""
        if not self._serving:  # the start failed (its error is logged): nothing to drain
            return
        if not self.draining:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.fleet.drain(self.active_sessions)
            self.log.info("fleet.draining", active=self.active_sessions)
        if timeout is None:
            await super().drain()
        else:
            await super().drain(timeout)

    async def aclose(self) -> None:
        await self._stop_heartbeat()
        if self._engine is not None:
            await asyncio.to_thread(self._engine.stop)
        with contextlib.suppress(*REDIS_ERRORS):
            await self.fleet.leave()
        self.log.info("fleet.left")
        await super().aclose()
        await self.redis.aclose()

    # -- dispatch ----------------------------------------------------------------------------
    async def on_request(self, req: JobRequest) -> None:
        """Accept a dispatch only with the lesson's current fence, naming this worker."""
        try:
            meta = DispatchMetadata.from_json(req.job.metadata or "")
        except ValidationError as exc:
            JOBS.labels("bad_metadata").inc()
            self.log.warning("job.rejected", reason="bad metadata", error=str(exc)[:300],
                             room=req.room.name)
            await req.reject()
            return
        ids = {"lesson_id": meta.lesson_id, "fence": meta.fence, "room": req.room.name}
        if self.draining:
            JOBS.labels("draining").inc()
            self.log.info("job.rejected", reason="draining", **ids)
            await req.reject()
            return
        try:
            current = await self.fleet.fence_is_current(meta)
        except REDIS_ERRORS as exc:
            JOBS.labels("redis_error").inc()
            self.log.warning("job.rejected", reason="redis unavailable", error=str(exc), **ids)
            await req.reject()
            return
        if not current:
            JOBS.labels("stale_fence").inc()
            self.log.info("job.rejected", reason="stale fence", **ids)
            await req.reject()
            return
        if len(self._lessons) >= self.capacity and meta.lesson_id not in self._lessons:
            JOBS.labels("full").inc()
            self.log.warning("job.rejected", reason="at capacity", **ids)
            await req.reject()
            return
        if self._lessons.get(meta.lesson_id) == meta.fence:
            JOBS.labels("duplicate").inc()
            self.log.info("job.rejected", reason="already serving this fence", **ids)
            await req.reject()
            if meta.lesson_id in self._sessions:  # our "live" was lost: the router retried
                with contextlib.suppress(*REDIS_ERRORS):
                    await self.fleet.report_session(meta.lesson_id, meta.fence, "live")
            return
        self._lessons[meta.lesson_id] = meta.fence
        if meta.voice_agent_identity:
            self._voices[meta.lesson_id] = meta.voice_agent_identity
        attributes = {"lesson_id": meta.lesson_id, "worker_id": self.worker_id,
                      "fence": str(meta.fence)}
        if meta.voice_agent_identity:
            attributes[ATTR_PUBLISH_ON_BEHALF] = meta.voice_agent_identity
        JOBS.labels("accepted").inc()
        self.log.info("job.accepted", **ids)
        await req.accept(name="Tutor", identity=avatar_identity(meta.lesson_id),
                         metadata=meta.to_json(), attributes=attributes)

    async def session_live(self, lesson_id: str, fence: int,
                           shutdown: Callable[[str], None]) -> bool:
        """The session's avatar is in the room: tell the fleet (the dispatch is confirmed).
        False when the fence was superseded meanwhile: the caller leaves. Callable from a
        job's own event loop: the Redis client lives on the worker's."""
        status = await self._on_worker_loop(self.fleet.report_session(lesson_id, fence, "live"))
        if status != "ok":
            return False
        self._sessions[lesson_id] = (fence, shutdown)
        return True

    async def session_lost(self, lesson_id: str, fence: int) -> str:
        """The session ended but its lesson did not: have the router dispatch it again, unless
        this worker is on its way out (then the router moves its lessons)."""
        if self.draining:
            return "draining"
        return await self._on_worker_loop(self.fleet.report_session(lesson_id, fence, "lost"))

    def session_ended(self, lesson_id: str, fence: int) -> None:
        if self._lessons.get(lesson_id) == fence:
            del self._lessons[lesson_id]
            self._voices.pop(lesson_id, None)
        if (s := self._sessions.get(lesson_id)) is not None and s[0] == fence:
            del self._sessions[lesson_id]

    def transcript(self, lesson_id: str, **log_ids) -> TranscriptWriter:
        """Where a session writes its lesson's transcript (Redis, on the worker's loop)."""
        return TranscriptWriter(self.redis, self._loop, lesson_id, **log_ids)

    async def _on_worker_loop(self, coro):
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def release_lesson(self, lesson_id: str, fence: int) -> str:
        """Free the seat of a lesson whose room ended (see ``FleetMember.release_lesson``).
        Callable from a job's own event loop: the Redis client lives on the worker's."""
        status = await self._on_worker_loop(self.fleet.release_lesson(lesson_id, fence))
        self.log.info("lesson.released", lesson_id=lesson_id, fence=fence, status=status)
        return status


def make_engine(settings: Settings) -> AvatarEngine:
    """The worker's engine: the shipped avatar at the configured output size (``video.width``
    x ``video.height``), torch composition on a GPU, numpy otherwise."""

    backend = "numpy"
    try:
        import torch

        if torch.cuda.is_available():
            backend = "torch"
    except ImportError:
        pass
    # every avatar is fitted to the deployment's output size once, when it is loaded
    asset = fit_asset(AvatarRegistry().default(), settings.video.width, settings.video.height)
    model = settings.worker.neural_model
    cfg = EngineConfig(fps=settings.video.fps, backend=backend,
                       neural_model=str(model) if model else None)
    return AvatarEngine(asset, cfg).start()


def check_models(settings: Settings) -> None:
    """Refuse to start on a neural model that does not load or has another signature
    (SettingsError naming the setting), rather than fail the first lesson that needs it."""
    if settings.worker.neural_model is None:
        return
    try:
        load_model(settings.worker.neural_model)
    except ModelSignatureError as exc:
        raise SettingsError(f"AVATAR_WORKER__NEURAL_MODEL: {exc}") from None


def build_server(settings: Settings, **kwargs) -> AvatarServer:
    """The worker with its job entrypoint registered under ``avatar-<worker_id>``."""
    from agent.session import run_session  # the session code, kept apart from membership

    kwargs.setdefault("job_executor_type", JobExecutorType.THREAD)  # jobs share one batcher
    kwargs.setdefault("num_idle_processes", 1)  # a warm job runner: the first lesson skips ~0.7 s
    kwargs.setdefault("port", settings.worker.health_port)  # the SDK's health endpoint
    kwargs.setdefault("drain_timeout", settings.worker.drain_timeout_s)
    server = AvatarServer(settings, **kwargs)

    async def entrypoint(ctx) -> None:
        await run_session(server, ctx)

    server.rtc_session(entrypoint, agent_name=agent_name(server.worker_id),
                       on_request=server.on_request)
    return server
