"""One avatar session: the job that runs in a room for one lesson.

Joins as the avatar participant (identity, name and attributes were set when the worker accepted
the dispatch), opens a session on the worker's shared engine, and runs the stock livekit-agents
``AvatarRunner``: voice-agent audio in through the avatar protocol, ``avatar_audio`` and
``avatar_video`` out through :class:`agent.sync.EngineSynchronizer`. Lesson text is spoken by
:mod:`agent.lesson`. Stays until the lesson ends (room closed, or the avatar removed); a lesson
whose room LiveKit closed frees its seat in the fleet.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner

from agent.audio_in import VoiceAgentReceiver
from agent.captions import LearnerCaptions
from agent.lesson import LessonSpeaker
from agent.reregister import health_url
from agent.room_watch import LIVEKIT_BACK, RejoinWhenBack
from agent.sync import EngineSynchronizer
from agent.transcript import VoiceAgentTranscripts
from agent.video_gen import EngineVideoGenerator
from agent.viseme_stream import VisemeStream
from config.fleet import AVATAR_AUDIO_TRACK, AVATAR_VIDEO_TRACK, DispatchMetadata
from config.logs import get_logger

if TYPE_CHECKING:
    from agent.worker import AvatarServer


AV_STREAM = "avatar"


class _AvatarRunner(AvatarRunner):
    """The stock runner, but both tracks are published when the session starts, video first:
    the stock one publishes lazily on the first frame, audio first, and waits for a subscriber
    to the audio before it publishes the video, which cost the learner's first frame ~0.3 s.
    Video goes first because the learner's subscriptions are negotiated one after the other
    (the second waits ~150-200 ms for the server's renegotiation), and the face is what the
    learner waits for: speech only starts once the avatar is there."""

    simulcast: bool = False
    fps: int = 25
    max_bitrate: int = 1_200_000
    video: bool = True  # False: a visemes-only lesson publishes the audio track alone

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # our engine is the clock: frames go out when their audio plays (see agent/sync.py)
        stock = self._av_sync
        self._av_sync = EngineSynchronizer(self._audio_source, self._video_source)
        self._stock_closed = asyncio.get_running_loop().create_task(stock.aclose())

    async def _publish_track(self) -> None:
        async with self._lock:
            if self._video_publication is not None:
                return
            await self._room_connected_fut
            lp = self._room.local_participant
            audio = rtc.LocalAudioTrack.create_audio_track(AVATAR_AUDIO_TRACK, self._audio_source)
            if not self.video:
                self._audio_publication = await lp.publish_track(audio, rtc.TrackPublishOptions(
                    source=rtc.TrackSource.SOURCE_MICROPHONE, stream=AV_STREAM))
                self._video_publication = self._audio_publication  # published: nothing more
                return
            video = rtc.LocalVideoTrack.create_video_track(AVATAR_VIDEO_TRACK, self._video_source)
            # Keep 512x512 at the full frame rate and give up encoding quality instead: WebRTC's
            # default ("balanced") halves the resolution while its bandwidth estimate ramps up,
            # and dropping frames would break the lip sync.
            self._video_publication = await lp.publish_track(video, rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_CAMERA, simulcast=self.simulcast, stream=AV_STREAM,
                video_encoding=rtc.VideoEncoding(max_framerate=self.fps,
                                                 max_bitrate=self.max_bitrate),
                degradation_preference=rtc.DegradationPreference.MAINTAIN_FRAMERATE_AND_RESOLUTION))
            self._audio_publication = await lp.publish_track(audio, rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_MICROPHONE, stream=AV_STREAM))


async def run_session(server: AvatarServer, ctx: JobContext) -> None:
    t_start = time.monotonic()
    meta = DispatchMetadata.from_json(ctx.job.metadata)
    ids = {"lesson_id": meta.lesson_id, "fence": meta.fence, "worker_id": server.worker_id,
           "session_id": ctx.job.id}
    log = get_logger("agent.session", room=ctx.job.room.name, **ids)

    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    engine = server.engine
    visemes_only = meta.output == "visemes"
    avatar = None if visemes_only else await server.avatars.for_lesson(meta.avatar, **ids)
    es = engine.open_session(lambda _f: None, session_id=ctx.job.id, render=not visemes_only,
                             avatar_id=avatar)
    gen = EngineVideoGenerator(es, asyncio.get_running_loop())
    gen.started_at = t_start
    receiver = VoiceAgentReceiver(
        ctx.room, sender_identity=meta.voice_agent_identity, lesson_id=meta.lesson_id,
        stall_s=server.settings.worker.stall_s, max_queued_s=server.settings.worker.max_queued_s,
        position_of=gen.source_position)
    cfg = engine.config
    runner = _AvatarRunner(ctx.room, audio_recv=receiver, video_gen=gen, _lazy_publish=False,
                           options=AvatarOptions(
                               video_width=engine.width, video_height=engine.height,
                               video_fps=cfg.fps, audio_sample_rate=cfg.sample_rate,
                               audio_channels=1))
    runner.simulcast = server.settings.video.simulcast
    runner.video = not visemes_only
    runner.fps, runner.max_bitrate = cfg.fps, server.settings.video.max_bitrate
    runner.av_sync.video_delay_s = server.settings.video.delay_ms / 1000
    gen.av_sync = runner.av_sync
    if server.settings.worker.viseme_stream or visemes_only:
        gen.viseme_stream = VisemeStream(ctx.room, cfg.fps)
    transcript = server.transcript(meta.lesson_id, session_id=ctx.job.id)
    LessonSpeaker(ctx.room, es, transcript=transcript, lesson_id=meta.lesson_id,
                  session_id=ctx.job.id)
    VoiceAgentTranscripts(ctx.room, transcript, meta.voice_agent_identity)
    if server.settings.worker.captions:  # the models were loaded at worker start
        LearnerCaptions(ctx.room, model=server.settings.worker.captions_model,
                        languages=server.settings.worker.captions_languages,
                        transcript=transcript, lesson_id=meta.lesson_id, session_id=ctx.job.id)

    rejoin = RejoinWhenBack(ctx.room, health_url(server.settings.livekit.url), ctx.shutdown,
                            **ids)

    async def _on_shutdown(reason: str = "") -> None:
        await rejoin.aclose()
        # first: a lesson reported lost comes straight back here, with the same fence
        server.session_ended(meta.lesson_id, meta.fence)
        try:
            await _settle_lesson(server, ctx.room.name, meta, reason, log)
        except Exception:
            log.warning("session.settle_failed", exc_info=True)
        es.close()
        if avatar:
            server.avatars.release(meta.avatar)
        try:
            await runner.aclose()
        except Exception:  # a runner that failed to start has less to close
            log.warning("session.runner_close_failed", exc_info=True)
        log.info("session.ended", reason=reason, segments=gen.segments_played,
                 underruns=es.jitter.stats.underruns)

    ctx.add_shutdown_callback(_on_shutdown)
    await runner.start()
    log.info("session.started", identity=ctx.room.local_participant.identity,
             voice_agent=meta.voice_agent_identity, output=meta.output,
             avatar=avatar or "default")

    @ctx.room.on("disconnected")
    def _gone(reason=None) -> None:
        name = rtc.DisconnectReason.Name(reason) if isinstance(reason, int) else "UNKNOWN_REASON"
        ctx.shutdown(f"{DISCONNECTED}{name}")

    loop = asyncio.get_running_loop()
    try:
        live = await server.session_live(
            meta.lesson_id, meta.fence, lambda why: loop.call_soon_threadsafe(ctx.shutdown, why))
    except Exception as exc:  # Redis away: serve on; the router's retry re-reports us live
        log.warning("session.live_report_failed", error=repr(exc))
        live = True
    if not live:
        log.warning("lesson.superseded", action="leaving the room")
        ctx.shutdown(SUPERSEDED)


DISCONNECTED = "room disconnected: "
SUPERSEDED = "fence superseded"
# how the room went away, by the reason LiveKit gave: the lesson is over (free its seat), or
# the lesson goes on without this session (dispatch it again)
_ROOM_OVER = {"ROOM_DELETED", "ROOM_CLOSED"}
_REMOVED = {"PARTICIPANT_REMOVED"}  # by the router (release, or a move): nothing to do


async def _settle_lesson(server: AvatarServer, room: str, meta: DispatchMetadata, reason: str,
                         log) -> None:
    """What a session's end means for its lesson. Its room ended: free the seat. It left
    because its fence moved on, or the router removed it: nothing. Otherwise (LiveKit went
    away, the avatar was displaced, the job failed) the lesson still wants an avatar: report it
    lost so the router dispatches again at once. A worker that is stopping reports nothing:
    the router moves its lessons when it leaves the pool. LiveKit back while the room still
    reconnects (:mod:`agent.room_watch`): lost, without asking LiveKit about a room it forgot."""
    if reason == SUPERSEDED:
        return
    if reason == LIVEKIT_BACK:  # LiveKit restarted: its room is new or not there yet
        status = await server.session_lost(meta.lesson_id, meta.fence)
        log.info("lesson.lost", reason=reason, status=status)
        return
    why = reason.removeprefix(DISCONNECTED) if reason.startswith(DISCONNECTED) else None
    if why in _REMOVED:
        return
    if why in _ROOM_OVER:
        gone = True
    elif why is not None:
        gone = False  # LiveKit's own word: the room lives on
    else:
        try:
            gone = await _room_gone(server.settings, room)
        except Exception as exc:  # LiveKit unreachable: the room is not known to be over
            log.info("session.room_unknown", error=repr(exc))
            gone = False
    if gone:
        await server.release_lesson(meta.lesson_id, meta.fence)
    else:
        status = await server.session_lost(meta.lesson_id, meta.fence)
        log.info("lesson.lost", reason=reason, status=status)


async def _room_gone(settings, room: str, wait_s: float = 3.0) -> bool:
    """Has LiveKit closed the lesson's room? A job ends the same way ("parent process
    shutdown") when LiveKit closes the room and when this worker stops; only the first frees
    the lesson's seat, the second leaves the lesson for the router to move. LiveKit ends the
    job while it closes the room, so the room may take a moment to disappear."""
    from livekit import api

    lk = settings.livekit
    async with api.LiveKitAPI(lk.url, lk.api_key, lk.api_secret.get_secret_value()) as lkapi:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))
            if not rooms.rooms:
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.25)
