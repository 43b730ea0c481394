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

Receivers still play a track's audio later than its video: the audio waits in a jitter buffer
(NetEq keeps 20-40 ms even on a clean network), in 20 ms Opus packets and in the output
device, the video ~10 ms in its jitter buffer; Chrome corrects a difference only above 30 ms.
Fed a flash and a tone captured at the same instant, headless Chromium showed the flash 55-70 ms
before it played the tone, and a Python SDK subscriber 45-60 ms (``scripts/room_probe.py``,
``scripts/browser.py``). So each frame is captured ``video_delay_s`` (``video.delay_ms``, one
40 ms frame by default) after its audio starts to play, which is what centres the learner's
offset; 0 makes capture times exact.

Every captured frame records its sender-side offset (capture time minus when its audio starts
to play: the delay plus how late the event loop ran the timer) in ``avatar_av_offset_seconds``.

Duck-typed to the part of ``AVSynchronizer`` that ``AvatarRunner`` uses (``push``,
``clear_queue``, ``aclose``).
"""

from __future__ import annotations

import asyncio

from livekit import rtc

from config.metrics import histogram

AV_OFFSET = histogram(
    "avatar_av_offset_seconds",
    "Sender-side A/V offset of each video frame: its capture time minus when its audio starts "
    "to play (+ = video later; the configured video delay plus event-loop lateness)",
    buckets=(0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.045, 0.05, 0.06, 0.08, 0.1, 0.15, 0.25))


class EngineSynchronizer:
    def __init__(self, audio_source: rtc.AudioSource, video_source: rtc.VideoSource,
                 video_delay_s: float = 0.0) -> None:
        self._audio = audio_source
        self._video = video_source
        self.video_delay_s = video_delay_s
        self._pending: set[asyncio.TimerHandle] = set()
        self._last_due = 0.0
        self.frames_captured = 0

    def audio_starts_at(self) -> float:
        """When audio pushed now starts to play (event-loop clock): after what is queued."""
        return asyncio.get_running_loop().time() + self._audio.queued_duration

    async def push(self, frame: rtc.VideoFrame | rtc.AudioFrame,
                   timestamp: float | None = None) -> None:
        if isinstance(frame, rtc.AudioFrame):
            await self._audio.capture_frame(frame)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        plays = now + self._audio.queued_duration  # when the audio pushed after it starts
        due = max(plays + self.video_delay_s, self._last_due + 0.001)
        self._last_due = due
        if due <= now:
            self._capture(frame, None, plays)
            return
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._capture(frame, handle, plays)

        handle = loop.call_at(due, fire)
        self._pending.add(handle)

    def _capture(self, frame: rtc.VideoFrame, handle: asyncio.TimerHandle | None,
                 plays: float) -> None:
        if handle is not None:
            self._pending.discard(handle)
        self._video.capture_frame(frame)
        self.frames_captured += 1
        AV_OFFSET.observe(asyncio.get_running_loop().time() - plays)

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
