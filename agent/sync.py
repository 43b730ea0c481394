"""Audio/video output of one avatar session, aligned to when the audio is really played.

The stock ``rtc.AVSynchronizer`` paces video with its own 25 fps clock, whose phase against our
engine's tick is arbitrary (0-40 ms, different in every session), and captures a frame as soon
as its slot comes, while the audio pushed with it first waits in ``rtc.AudioSource``'s queue.
At a learner the mouth then led the sound by 35-55 ms (measured in ``tests/agent``).

Our engine already paces frames (exactly one per tick, with exactly ``1/fps`` of its audio), so
no second clock is needed: each video frame is captured when the audio pushed after it will
start to play, i.e. after the audio source's queued duration at that moment. Audio goes into
the source at once. A WebRTC receiver that syncs the two tracks (LiveKit's ``sync_streams``)
then lines them up by these capture times; one that does not sees them in step as sent.

Duck-typed to the part of ``AVSynchronizer`` that ``AvatarRunner`` uses (``push``,
``clear_queue``, ``aclose``).
"""

from __future__ import annotations

import asyncio

from livekit import rtc


class EngineSynchronizer:
    def __init__(self, audio_source: rtc.AudioSource, video_source: rtc.VideoSource) -> None:
        self._audio = audio_source
        self._video = video_source
        self._pending: set[asyncio.TimerHandle] = set()
        self._last_due = 0.0
        self.frames_captured = 0

    async def push(self, frame: rtc.VideoFrame | rtc.AudioFrame,
                   timestamp: float | None = None) -> None:
        if isinstance(frame, rtc.AudioFrame):
            await self._audio.capture_frame(frame)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = max(now + self._audio.queued_duration, self._last_due + 0.001)
        self._last_due = due
        if due <= now:
            self._capture(frame, None)
            return
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._capture(frame, handle)

        handle = loop.call_at(due, fire)
        self._pending.add(handle)

    def _capture(self, frame: rtc.VideoFrame, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None:
            self._pending.discard(handle)
        self._video.capture_frame(frame)
        self.frames_captured += 1

    async def clear_queue(self) -> None:
        """Interruption: drop the queued audio and the frames waiting for it."""
        self._audio.clear_queue()
        for h in list(self._pending):
            h.cancel()
        self._pending.clear()
        self._last_due = 0.0

    async def aclose(self) -> None:
        for h in list(self._pending):
            h.cancel()
        self._pending.clear()
