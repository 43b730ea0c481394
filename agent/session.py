"""One avatar session: the job that runs in a room for one lesson.

Joins as the avatar participant (identity, name and attributes were set when the worker accepted
the dispatch), opens a session on the worker's shared engine, and runs the stock livekit-agents
``AvatarRunner``: voice-agent audio in through the avatar protocol, ``avatar_audio`` and
``avatar_video`` out through ``AVSynchronizer``. Lesson text is spoken by :mod:`agent.lesson`.
Stays until the lesson ends (room closed, or the avatar removed).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from livekit.agents import AutoSubscribe, JobContext
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner

from agent.audio_in import LateJoinAudioReceiver
from agent.lesson import LessonSpeaker
from agent.video_gen import EngineVideoGenerator
from config.fleet import DispatchMetadata
from config.logs import get_logger

if TYPE_CHECKING:
    from agent.worker import AvatarServer


async def run_session(server: AvatarServer, ctx: JobContext) -> None:
    meta = DispatchMetadata.from_json(ctx.job.metadata)
    ids = {"lesson_id": meta.lesson_id, "fence": meta.fence, "worker_id": server.worker_id,
           "session_id": ctx.job.id}
    log = get_logger("agent.session", room=ctx.job.room.name, **ids)

    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    engine = server.engine
    es = engine.open_session(lambda _f: None, session_id=ctx.job.id)
    gen = EngineVideoGenerator(es, asyncio.get_running_loop())
    receiver = LateJoinAudioReceiver(ctx.room, sender_identity=meta.voice_agent_identity)
    cfg = engine.config
    runner = AvatarRunner(ctx.room, audio_recv=receiver, video_gen=gen, options=AvatarOptions(
        video_width=engine.width, video_height=engine.height, video_fps=cfg.fps,
        audio_sample_rate=cfg.sample_rate, audio_channels=1))
    gen.av_sync = runner.av_sync
    LessonSpeaker(ctx.room, es, lesson_id=meta.lesson_id, session_id=ctx.job.id)

    async def _on_shutdown(reason: str = "") -> None:
        es.close()
        await runner.aclose()
        server.session_ended(meta.lesson_id, meta.fence)
        log.info("session.ended", reason=reason, segments=gen.segments_played,
                 underruns=es.jitter.stats.underruns)

    ctx.add_shutdown_callback(_on_shutdown)
    await runner.start()
    log.info("session.started", identity=ctx.room.local_participant.identity,
             voice_agent=meta.voice_agent_identity)

    @ctx.room.on("disconnected")
    def _gone(*_args) -> None:
        ctx.shutdown("room disconnected")
