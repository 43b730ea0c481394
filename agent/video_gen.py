"""The engine session as a livekit-agents ``VideoGenerator``, so the stock ``AvatarRunner``
(``DataStreamAudioReceiver`` -> generator -> synchroniser) drives it.

Audio from the voice agent arrives at any rate and channel count; it is resampled to the
engine's rate (mono) and pushed into the session. The resampler holds some input back (40-60 ms
at a stream's start, 8-33 ms after); each resampled chunk is pushed with the arrival time of the
input its last sample came from, so the jitter buffer times it as if no resampler were there:
a 48 kHz stereo stream starts and stays in sync like a 16 kHz mono one. The engine's thread hands back one
:class:`~avatar_pipeline.engine.OutputFrame` per frame period, which this generator yields as a
``VideoFrame`` followed, while speaking, by exactly one frame period of ``AudioFrame`` (and
``AudioSegmentEnd`` after a segment's last frame); a frame's cue (lesson speech starting) is
called as it goes out. An interruption clears the engine session,
the frames waiting here and the synchroniser's queues.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from avatar_pipeline.engine import EngineSession, OutputFrame
from config.logs import get_logger
from config.metrics import counter, histogram

log = get_logger("agent.video_gen")
DROPPED = counter("avatar_frames_dropped_total", "Frames dropped because nobody consumed them")
FIRST_FRAME = histogram("avatar_first_frame_seconds",
                        "Session start (job accepted) -> its first video frame handed to WebRTC",
                        buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
_FORMATS = {"i420": rtc.VideoBufferType.I420, "rgba": rtc.VideoBufferType.RGBA}


class _HeldInput:
    """When the input behind a resampler's output arrived. Input chunks are recorded as (end
    of the chunk in seconds of audio, arrival time); the resampler shifts nothing in time, so
    output sample k came from the input chunk that holds time k / rate."""

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[float, float]] = collections.deque()
        self._in_s = 0.0
        self._out = 0  # output samples so far

    def came(self, seconds: float, at: float) -> None:
        self._in_s += seconds
        self._chunks.append((self._in_s, at))

    def out(self, n: int, rate: int) -> list[tuple[int, int, float | None]]:
        """``n`` more output samples as pieces ``(start, end, arrival)``, cut where the input
        chunk they came from changes."""
        pieces, i = [], 0
        while i < n:
            while len(self._chunks) > 1 and self._chunks[0][0] * rate <= self._out + i + 1e-6:
                self._chunks.popleft()
            if not self._chunks:
                pieces.append((i, n, None))
                break
            end_s, at = self._chunks[0]
            j = n if len(self._chunks) == 1 else min(n, max(
                i + 1, int(round(end_s * rate)) - self._out))
            pieces.append((i, j, at))
            i = j
        self._out += n
        return pieces


class EngineVideoGenerator(VideoGenerator):
    def __init__(self, session: EngineSession, loop: asyncio.AbstractEventLoop,
                 max_queued_frames: int = 50) -> None:
        self.session = session
        self.sample_rate = session.engine.config.sample_rate
        self.fps = session.engine.config.fps
        self._loop = loop
        self._queue: asyncio.Queue[OutputFrame] = asyncio.Queue()
        self._max_queued = max_queued_frames
        self._resampler: rtc.AudioResampler | None = None
        self._in_rate: int | None = None
        self._held = _HeldInput()
        self.av_sync = None  # the runner's synchroniser, set by the session; cleared on clear
        self.segments_played = 0
        # audio time stretching added to the segment playing (+) or saved (-); the runner counts
        # played time, the voice agent wants its own audio's: see source_position()
        self._stretch_s = 0.0
        self.last_stretch_s = 0.0
        self.started_at: float | None = None  # monotonic: the session's start, for FIRST_FRAME
        self.viseme_stream = None  # agent.viseme_stream.VisemeStream, when the session has one
        session.on_frame = self._on_frame

    # engine thread
    def _on_frame(self, frame: OutputFrame) -> None:
        self._loop.call_soon_threadsafe(self._enqueue, frame)

    def _enqueue(self, frame: OutputFrame) -> None:
        # Nobody is consuming (e.g. before anyone subscribed): keep the newest frames only.
        while self._queue.qsize() >= self._max_queued:
            self._queue.get_nowait()
            DROPPED.inc()
        self._queue.put_nowait(frame)

    # -- VideoGenerator ----------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            if self._resampler is not None:
                for f in self._resampler.flush():
                    self._push_resampled(f)
                self._drop_resampler()
            self.session.end_segment()
            return
        if frame.sample_rate != self.sample_rate:
            if self._resampler is None or self._in_rate != frame.sample_rate:
                self._resampler = rtc.AudioResampler(frame.sample_rate, self.sample_rate,
                                                     num_channels=frame.num_channels)
                self._in_rate = frame.sample_rate
                self._held = _HeldInput()
            self._held.came(frame.samples_per_channel / frame.sample_rate,
                            self.session.engine.clock())
            for f in self._resampler.push(frame):
                self._push_resampled(f)
        else:
            self.session.push_audio(self._mono(frame))

    def _push_resampled(self, frame: rtc.AudioFrame) -> None:
        pcm = self._mono(frame)
        for start, end, arrived in self._held.out(len(pcm), frame.sample_rate):
            self.session.push_audio(pcm[start:end], arrived)

    def _drop_resampler(self) -> None:
        self._resampler, self._in_rate = None, None
        self._held = _HeldInput()

    @staticmethod
    def _mono(frame: rtc.AudioFrame) -> np.ndarray:
        pcm = np.frombuffer(frame.data, np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        return pcm

    def source_position(self, played_s: float) -> float:
        """The runner's playback position (audio played) of the segment that just ended or
        was cut, as a position in the voice agent's audio: the jitter buffer's time-stretching
        taken out."""
        return max(0.0, played_s - self.last_stretch_s)

    async def clear_buffer(self) -> None:
        self.session.clear()
        self.last_stretch_s, self._stretch_s = self._stretch_s, 0.0
        self._drop_resampler()
        while not self._queue.empty():
            self._queue.get_nowait()
        if self.av_sync is not None:
            await self.av_sync.clear_queue()
        log.info("session.cleared", session_id=self.session.session_id)

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        first = True
        while True:
            f = await self._queue.get()
            if self.viseme_stream is not None and self.av_sync is not None:
                # this frame's audio is pushed right after it: it plays after what is queued
                self.viseme_stream.frame(self.av_sync.audio_starts_at(), f.weights, f.blink)
            if f.video:  # a visemes-only session has no picture
                yield rtc.VideoFrame(f.width, f.height, _FORMATS[f.fmt], f.video)
            if first and self.started_at is not None:
                FIRST_FRAME.observe(time.monotonic() - self.started_at)
            first = False
            if f.audio is not None:
                self._stretch_s += f.stretch_s
                yield rtc.AudioFrame(f.audio.tobytes(), self.sample_rate, 1, len(f.audio))
            if f.cue is not None:
                try:
                    f.cue()
                except Exception:  # a caption must not stop the video
                    log.exception("session.cue_failed", session_id=self.session.session_id)
            if f.segment_end:
                self.segments_played += 1
                self.last_stretch_s, self._stretch_s = self._stretch_s, 0.0
                yield AudioSegmentEnd()
