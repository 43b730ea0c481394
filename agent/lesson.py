"""Lesson scripts: the avatar speaks text with our TTS and exact visemes.

Text arrives either as a data packet on :data:`config.fleet.SAY_TOPIC` (the router sends it with
LiveKit's server API; the router is not a room participant) or as the RPC
:data:`config.fleet.RPC_SAY` from an agent in the room. Only those two may steer the tutor: a
data packet sent by any participant (a learner, even with a token that lets it publish data)
and an RPC from a participant that is not an agent are refused. LiveKit sets both facts (the
sender of a server-API packet is nobody; a participant's kind comes from its token, which
learners get from the router), so a learner cannot forge them. Either way the text
is synthesised off the event loop, resampled to the engine's rate and queued on the session with
its exact viseme track; the text is published as a transcription of the avatar's audio track
(text stream on ``lk.transcription``, as livekit-agents does), word by word as it is spoken.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time

import numpy as np
from livekit import rtc
from livekit.agents.types import (
    ATTRIBUTE_TRANSCRIPTION_FINAL,
    ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID,
    ATTRIBUTE_TRANSCRIPTION_TRACK_ID,
    TOPIC_TRANSCRIPTION,
)
from pydantic import ValidationError

from agent.transcript import TranscriptWriter, wall_time
from avatar_pipeline.engine import EngineSession
from avatar_pipeline.tts.voices import engine_for, sentences
from config.fleet import AVATAR_AUDIO_TRACK, RPC_SAY, SAY_TOPIC, SayRequest, TranscriptEntry
from config.logs import get_logger
from config.metrics import counter

SAID = counter("avatar_lesson_say_total", "Lesson texts, by outcome", ("result",))


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """int16 mono -> int16 mono at ``rate_out`` (LiveKit's sox resampler)."""
    if rate_in == rate_out:
        return np.asarray(pcm, np.int16)
    r = rtc.AudioResampler(rate_in, rate_out, num_channels=1,
                           quality=rtc.AudioResamplerQuality.HIGH)
    frames = r.push(rtc.AudioFrame(np.asarray(pcm, np.int16).tobytes(), rate_in, 1, len(pcm)))
    frames += r.flush()
    if not frames:
        return np.zeros(0, np.int16)
    return np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])


class LessonSpeaker:
    def __init__(self, room: rtc.Room, session: EngineSession, tts=None,
                 transcript: TranscriptWriter | None = None, **log_ids) -> None:
        """``tts``: one engine for every request (else each voice's, ``tts.voices``);
        ``transcript``: where the lesson's record of what the tutor said goes."""
        self.room = room
        self.transcript = transcript
        self.session = session
        self.tts = tts
        self.log = get_logger("agent.lesson", **log_ids)
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()  # one synthesis at a time, in order of arrival
        self._tasks: set[asyncio.Task] = set()
        self.caption_wait_s = 600.0  # a caption waits this long for its speech to play
        room.on("data_received", self._on_data)
        room.local_participant.register_rpc_method(RPC_SAY, self._on_rpc)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != SAY_TOPIC:
            return
        if packet.participant is not None:
            self._refuse(packet.participant.identity, "data")
            return
        try:
            req = SayRequest.model_validate_json(packet.data)
        except ValidationError as exc:
            SAID.labels("bad_request").inc()
            self.log.warning("lesson.bad_say", error=str(exc)[:300])
            return
        task = asyncio.create_task(self.say(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, identity: str, via: str) -> None:
        SAID.labels("forbidden").inc()
        self.log.warning("lesson.say_refused", sender=identity, via=via)

    async def _on_rpc(self, data: rtc.RpcInvocationData) -> str:
        caller = self.room.remote_participants.get(data.caller_identity)
        if caller is None or caller.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._refuse(data.caller_identity, "rpc")
            raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR,
                               "forbidden: only the lesson's agent or backend makes the tutor "
                               "speak")
        try:
            req = SayRequest.model_validate_json(data.payload)
        except ValidationError as exc:
            SAID.labels("bad_request").inc()
            raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR,
                               f"bad say request: {str(exc)[:200]}") from None
        seconds = await self.say(req)
        return f'{{"duration_s": {seconds:.3f}}}'

    async def say(self, req: SayRequest) -> float:
        """Speak ``req.text`` in its voice (``config.voices``; the language's default when it
        names none); returns the speech's duration in seconds. Sentence by sentence: the first
        is queued as soon as it is synthesised and plays while the next are made. The caption
        is streamed word by word as the speech plays (see :func:`caption_plan`)."""
        loop = asyncio.get_running_loop()
        if self.tts is not None:
            engine, voice, used = self.tts, req.voice, req.voice or "given"
        else:
            engine, voice, used = engine_for(req.voice, req.language)
        parts = sentences(req.text, language=req.language) or [req.text]
        cues: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(self._caption(req, cues))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        total = 0.0
        t0 = time.monotonic()
        try:
            async with self._lock:
                cfg = self.session.engine.config
                for i, part in enumerate(parts):
                    try:
                        speech = await asyncio.to_thread(engine.synthesize, part, req.language,
                                                         voice)
                    except ValueError as exc:  # this request fails, not the lesson
                        SAID.labels("tts_error").inc()
                        self.log.warning("lesson.tts_failed", error=str(exc),
                                         language=req.language, voice=used)
                        return total
                    pcm = await asyncio.to_thread(resample, speech.pcm, speech.sample_rate,
                                                  cfg.sample_rate)
                    started: asyncio.Future[float] = loop.create_future()
                    self.session.say(pcm, speech.viseme_track(cfg.fps),
                                     on_start=functools.partial(_set_now, started))
                    plan = caption_plan(part, speech)
                    if i and plan:  # the space between this sentence and the one before
                        plan[0] = (plan[0][0], " " + plan[0][1])
                    cues.put_nowait((plan, started, speech.duration_s))
                    if i == 0:
                        self.log.info("lesson.first_audio_queued", voice=used,
                                      ms=round(1000 * (time.monotonic() - t0), 1))
                    total += speech.duration_s
                SAID.labels("ok").inc()
                self.log.info("lesson.say", language=req.language, voice=used,
                              chars=len(req.text), sentences=len(parts),
                              duration_s=round(total, 3))
        finally:
            cues.put_nowait(None)
        return total

    async def _caption(self, req: SayRequest, cues: asyncio.Queue) -> None:
        """The transcription of the avatar's audio: one stream for the request, each word
        written when it is spoken. Speech that never plays (cleared by an interruption) is not
        captioned."""
        loop = asyncio.get_running_loop()
        writer = None
        said: list[str] = []
        first = end = None  # loop times the speech that played started and ends
        try:
            while (item := await cues.get()) is not None:
                plan, started, duration_s = item
                try:
                    t0 = await asyncio.wait_for(started, self.caption_wait_s)
                except TimeoutError:
                    break
                first, end = first if first is not None else t0, t0 + duration_s
                said += [chunk for _at, chunk in plan]
                if writer is None:
                    writer = await self.room.local_participant.stream_text(
                        topic=TOPIC_TRANSCRIPTION, attributes=self._caption_attrs(req))
                for at, chunk in plan:
                    await asyncio.sleep(max(0.0, t0 + at - loop.time()))
                    await writer.write(chunk)
            if writer is not None:
                await writer.aclose(attributes={ATTRIBUTE_TRANSCRIPTION_FINAL: "true"})
        except Exception as exc:  # the room went away mid-caption: the speech still played
            self.log.info("lesson.caption_failed", error=repr(exc))
        if self.transcript is not None and first is not None:
            self.transcript.add(TranscriptEntry(
                speaker="tutor", identity=self.room.local_participant.identity,
                start=wall_time(first, loop), end=wall_time(end, loop),
                text="".join(said).strip(), language=req.language, source="say"))

    def _caption_attrs(self, req: SayRequest) -> dict[str, str]:
        attrs = {ATTRIBUTE_TRANSCRIPTION_FINAL: "false",
                 ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID: f"say-{next(self._ids)}",
                 "lk.language": req.language}
        for pub in self.room.local_participant.track_publications.values():
            if pub.name == AVATAR_AUDIO_TRACK:
                attrs[ATTRIBUTE_TRANSCRIPTION_TRACK_ID] = pub.sid
        return attrs


def _set_now(fut: asyncio.Future) -> None:
    """A speech's first frame went out (called on the session's loop)."""
    if not fut.done():
        fut.set_result(fut.get_loop().time())


def caption_plan(text: str, speech) -> list[tuple[float, str]]:
    """When to show each word of ``text``: (seconds after the speech starts, the word with its
    following space). The words share the span from the first to the last sounding phoneme in
    proportion to their length (the TTS times phonemes, not words), so the caption starts as
    the voice does and is complete when it stops."""
    words = text.split()
    if not words:
        return []
    sounding = [p for p in speech.phonemes if p.viseme != "sil" and p.end_s > p.start_s]
    t0 = sounding[0].start_s if sounding else 0.0
    t1 = sounding[-1].end_s if sounding else speech.duration_s
    weights = np.array([len(w) + 1 for w in words], np.float64)
    starts = t0 + (t1 - t0) * (np.cumsum(weights) - weights) / weights.sum()
    return [(float(t), w + (" " if i < len(words) - 1 else ""))
            for i, (t, w) in enumerate(zip(starts, words, strict=True))]
