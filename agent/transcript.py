"""A lesson's transcript, kept in Redis for the router's ``GET /v1/lessons/{id}/transcript``.

Three sources write lines: lesson text our TTS spoke (:class:`agent.lesson.LessonSpeaker`, the
words that really played), the worker's captions of a learner (:class:`agent.captions.
LearnerCaptions`), and the voice agent's own transcriptions, which livekit-agents publishes to
the room as text streams on ``lk.transcription`` (:class:`VoiceAgentTranscripts`: its replies,
and its speech-to-text of the learner when it runs one).

Writing never holds up speech: :meth:`TranscriptWriter.add` queues the line on the worker's
event loop (the Redis client lives there; sessions run on loops of their own) and returns; a
Redis error costs that line, logged and counted, never the lesson.
"""

from __future__ import annotations

import asyncio
import collections
import time

from livekit import rtc
from livekit.agents.types import (
    ATTRIBUTE_TRANSCRIPTION_FINAL,
    ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID,
    ATTRIBUTE_TRANSCRIPTION_TRACK_ID,
    TOPIC_TRANSCRIPTION,
)

from config.fleet import TRANSCRIPT_MAXLEN, TRANSCRIPT_TTL_S, TranscriptEntry, transcript_key
from config.logs import get_logger
from config.metrics import counter
from config.redis_client import REDIS_ERRORS

LINES = counter("avatar_transcript_lines_total", "Transcript lines, by source and outcome",
                ("source", "result"))


class TranscriptWriter:
    """Appends a lesson's lines to its Redis stream, from any thread or loop."""

    def __init__(self, redis, loop: asyncio.AbstractEventLoop, lesson_id: str,
                 **log_ids) -> None:
        self.redis, self.loop, self.key = redis, loop, transcript_key(lesson_id)
        self.log = get_logger("agent.transcript", lesson_id=lesson_id, **log_ids)

    def add(self, entry: TranscriptEntry) -> None:
        if not entry.text.strip():
            return
        asyncio.run_coroutine_threadsafe(self._write(entry), self.loop)

    async def _write(self, entry: TranscriptEntry) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.key, {"e": entry.model_dump_json()}, maxlen=TRANSCRIPT_MAXLEN,
                          approximate=True)
                pipe.expire(self.key, TRANSCRIPT_TTL_S)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            LINES.labels(entry.source, "redis_error").inc()
            self.log.warning("transcript.line_lost", source=entry.source, error=str(exc))
            return
        LINES.labels(entry.source, "ok").inc()


def wall_time(loop_time: float, loop: asyncio.AbstractEventLoop) -> float:
    """Unix time of a moment on ``loop``'s clock."""
    return time.time() - (loop.time() - loop_time)


def _is_agent(p: rtc.RemoteParticipant | None) -> bool:
    return p is not None and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


class VoiceAgentTranscripts:
    """Records the voice agent's final transcriptions: its replies as the tutor's lines, its
    speech-to-text of a learner's track as that learner's."""

    def __init__(self, room: rtc.Room, writer: TranscriptWriter, voice_identity: str | None
                 ) -> None:
        self.room, self.writer, self.voice = room, writer, voice_identity
        self._tasks: set[asyncio.Task] = set()
        # segment id -> when its first stream opened: a learner's line is sent as interim
        # streams then a final one, so it started at the first
        self._first_seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        room.register_text_stream_handler(TOPIC_TRANSCRIPTION, self._on_stream)

    def _on_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        attrs = reader.info.attributes or {}
        p = self.room.remote_participants.get(sender)
        self.writer.log.debug("transcript.stream", sender=sender,
                              kind=None if p is None else int(p.kind), attributes=attrs)
        if not self._from_voice_agent(sender, p, attrs):
            return
        segment = attrs.get(ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID, reader.info.stream_id)
        start = self._first_seen.setdefault(segment, time.time())
        while len(self._first_seen) > 256:
            self._first_seen.popitem(last=False)
        task = asyncio.create_task(self._read(reader, sender, start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _from_voice_agent(self, sender: str, p: rtc.RemoteParticipant | None,
                          attrs: dict[str, str]) -> bool:
        """The lesson's voice agent (the identity its join named, else any agent) writes the
        record. livekit-agents sends its speech-to-text of a learner on the learner's behalf
        (the stream's sender is the learner): taken when it transcribes that learner's own
        track while the voice agent is in the room. A learner's client could send the same,
        and so write its own lines (never the tutor's)."""
        if sender == self.voice if self.voice else _is_agent(p):
            return True
        voice_here = (self.voice in self.room.remote_participants if self.voice else
                      any(_is_agent(q) for q in self.room.remote_participants.values()))
        own_track = (p is not None and not _is_agent(p)
                     and attrs.get(ATTRIBUTE_TRANSCRIPTION_TRACK_ID, "") in p.track_publications)
        return voice_here and own_track

    async def _read(self, reader: rtc.TextStreamReader, sender: str, start: float) -> None:
        try:
            text = await reader.read_all()
        except Exception as exc:  # the sender left mid-stream
            self.writer.log.info("transcript.stream_failed", sender=sender, error=repr(exc))
            return
        attrs = reader.info.attributes or {}
        if attrs.get(ATTRIBUTE_TRANSCRIPTION_FINAL, "true") != "true":
            return
        owner = self._track_owner(attrs.get(ATTRIBUTE_TRANSCRIPTION_TRACK_ID, ""))
        learner = owner is not None and not _is_agent(owner)
        self.writer.add(TranscriptEntry(
            speaker="learner" if learner else "tutor",
            identity=owner.identity if learner else sender, start=start, end=time.time(),
            text=text.strip(), language=attrs.get("lk.language") or None,
            source="voice_agent"))

    def _track_owner(self, track_sid: str) -> rtc.RemoteParticipant | None:
        for p in self.room.remote_participants.values():
            if track_sid in p.track_publications:
                return p
        return None
