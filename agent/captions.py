"""Learner captions: the learner's microphone, transcribed with faster-whisper (multilingual
Whisper base, or tiny.en on English-only workers; ``avatar_pipeline.asr``, nothing downloaded),
published as transcriptions of the learner's track (text stream ``lk.transcription``, as
livekit-agents does for user speech), each with the language it was heard in.

Utterances are cut by Silero VAD (livekit-plugins-silero, its weights inside the package): one
VAD stream per learner track, an utterance ends after ``END_SILENCE_S`` of silence; its frames
(with the VAD's prefix padding) go to Whisper. The language is the deployment's only lesson
language if it has one, else Whisper's detection among the deployment's lesson languages
(``worker.captions_languages``; empty: any). One model per worker process, one transcription at a
time, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Sequence

import numpy as np
from livekit import rtc
from livekit.agents.types import (
    ATTRIBUTE_TRANSCRIPTION_FINAL,
    ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID,
    ATTRIBUTE_TRANSCRIPTION_TRACK_ID,
    TOPIC_TRANSCRIPTION,
)
from livekit.agents.vad import VADEventType

from agent.transcript import TranscriptWriter
from avatar_pipeline.asr import RATE, transcribe_as, whisper_model
from config.fleet import TranscriptEntry
from config.logs import get_logger
from config.metrics import counter

CAPTIONS = counter("avatar_captions_total", "Learner utterances transcribed, by outcome",
                   ("result",))
END_SILENCE_S = 0.6
MAX_UTTERANCE_S = 30.0
_VAD = None
_VAD_LOCK = threading.Lock()


def silero_vad():
    """Silero VAD (livekit-plugins-silero), loaded once per process: an utterance ends after
    ``END_SILENCE_S`` of silence and holds at most ``MAX_UTTERANCE_S`` (one Whisper window)."""
    global _VAD
    with _VAD_LOCK:
        if _VAD is None:
            try:
                from livekit.plugins import silero
            except ImportError as exc:
                raise RuntimeError("learner captions need the `captions` extra "
                                   "(livekit-plugins-silero)") from exc
            _VAD = silero.VAD.load(min_silence_duration=END_SILENCE_S,
                                   max_buffered_speech=MAX_UTTERANCE_S, sample_rate=RATE,
                                   force_cpu=True)
        return _VAD


async def load_captions(model: str) -> None:
    """Everything captions need, loaded now (a worker calls this at start: a missing extra or
    a broken model stops it there, not at a learner's first word). On the worker's main
    thread: livekit-agents registers a plugin (Silero) only there."""
    silero_vad()
    await asyncio.to_thread(whisper_model, model)


class LearnerCaptions:
    def __init__(self, room: rtc.Room, model: str = "base", languages: Sequence[str] = (),
                 transcript: TranscriptWriter | None = None, **log_ids) -> None:
        """``model``: ``base`` (multilingual) or ``tiny.en``; ``languages``: the lesson
        languages to tell apart (our codes; one: always that one; none: any)."""
        whisper_model(model)  # loaded at worker start (load_captions); here, it fails early
        silero_vad()
        self.room = room
        self.transcript = transcript
        self.model = model
        self.languages = tuple(languages)
        self.log = get_logger("agent.captions", **log_ids)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        room.on("track_subscribed", self._on_track)
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, p)

    def _on_track(self, track, pub, participant) -> None:
        if (track.kind != rtc.TrackKind.KIND_AUDIO
                or participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT):
            return  # learners only: voice agents and other avatars are not captioned
        task = asyncio.create_task(self._listen(track, pub.sid, participant.identity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track, track_sid: str, identity: str) -> None:
        vad = silero_vad().stream()

        async def feed() -> None:
            async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
                vad.push_frame(ev.frame)
            vad.end_input()

        feeder = asyncio.create_task(feed())
        try:
            async for ev in vad:
                if ev.type != VADEventType.END_OF_SPEECH or not ev.frames:
                    continue
                pcm = np.concatenate([np.frombuffer(f.data, np.int16) for f in ev.frames])
                task = asyncio.create_task(self._caption(pcm, track_sid, identity, time.time()))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
            await vad.aclose()

    async def _caption(self, pcm: np.ndarray, track_sid: str, identity: str,
                       ended: float) -> None:
        async with self._lock:
            try:
                heard = await asyncio.to_thread(
                    transcribe_as, pcm, self.model,
                    self.languages[0] if len(self.languages) == 1 else None, self.languages)
            except Exception:
                CAPTIONS.labels("error").inc()
                self.log.exception("captions.failed", participant=identity)
                return
        text = heard.text
        if not text:
            CAPTIONS.labels("empty").inc()
            return
        CAPTIONS.labels("ok").inc()
        self.log.info("captions.utterance", participant=identity, chars=len(text),
                      seconds=round(len(pcm) / RATE, 2), language=heard.language,
                      language_p=round(heard.language_probability, 2))
        if self.transcript is not None:
            self.transcript.add(TranscriptEntry(
                speaker="learner", identity=identity, start=ended - len(pcm) / RATE, end=ended,
                text=text, language=heard.language, source="captions"))
        await self.room.local_participant.send_text(text, topic=TOPIC_TRANSCRIPTION, attributes={
            ATTRIBUTE_TRANSCRIPTION_TRACK_ID: track_sid,
            ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID: f"learner-{next(self._ids)}",
            ATTRIBUTE_TRANSCRIPTION_FINAL: "true",
            "lk.language": heard.language,
        })
