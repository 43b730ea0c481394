"""Speech in from a voice agent, through the stock avatar protocol, without waiting for it.

``DataStreamAudioReceiver`` (livekit-agents) is the avatar side of ``DataStreamAudioOutput``:
byte streams on ``lk.audio_stream``, ``lk.clear_buffer`` in, ``lk.playback_started`` /
``lk.playback_finished`` out. Its ``start()`` waits until the voice agent is in the room, and
``AvatarRunner`` calls it before anything else, so an avatar that speaks only lesson scripts
would never show up. :class:`LateJoinAudioReceiver` starts at once and attaches the stock
receiver in the background whenever the voice agent arrives.

:class:`StallGuard` ends a segment whose stream stalled (no audio for ``stall_s``) so a broken
stream ends its segment, never the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from livekit import rtc
from livekit.agents.utils import aio
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd, DataStreamAudioReceiver

from config.logs import get_logger

log = get_logger("agent.audio_in")


class LateJoinAudioReceiver(AudioReceiver):
    def __init__(self, room: rtc.Room, sender_identity: str | None = None,
                 stall_s: float = 3.0) -> None:
        super().__init__()
        self._inner = DataStreamAudioReceiver(room, sender_identity=sender_identity)
        self._ch = aio.Chan[rtc.AudioFrame | AudioSegmentEnd]()
        self._attached = False
        self._task: asyncio.Task | None = None
        self._stall_s = stall_s
        self._in_segment = False
        self._last_audio = 0.0

    @property
    def attached(self) -> bool:
        return self._attached

    async def start(self) -> None:
        self._task = asyncio.create_task(self._attach(), name="voice-agent-audio")

    async def _attach(self) -> None:
        await self._inner.start()
        self._attached = True
        self._inner.on("clear_buffer", lambda: self.emit("clear_buffer"))
        log.info("audio_in.attached")
        watchdog = asyncio.create_task(self._watch_stalls())
        try:
            async for item in self._inner:
                if isinstance(item, AudioSegmentEnd):
                    if self._in_segment:
                        self._in_segment = False
                        self._ch.send_nowait(item)
                    continue
                self._in_segment = True
                self._last_audio = time.monotonic()
                self._ch.send_nowait(item)
        finally:
            watchdog.cancel()

    async def _watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(self._stall_s / 4)
            if self._in_segment and time.monotonic() - self._last_audio > self._stall_s:
                log.warning("audio_in.segment_stalled", silent_s=self._stall_s)
                self._in_segment = False  # the stream's own end, if it ever comes, is dropped
                self._ch.send_nowait(AudioSegmentEnd())

    def notify_playback_started(self):
        return self._inner.notify_playback_started() if self._attached else None

    def notify_playback_finished(self, playback_position: float, interrupted: bool):
        if not self._attached:
            return None
        return self._inner.notify_playback_finished(playback_position, interrupted)

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        return self._ch.__aiter__()

    async def aclose(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._ch.close()
        if self._attached:
            await self._inner.aclose()
