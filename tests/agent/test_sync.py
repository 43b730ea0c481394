"""agent/sync.py's scheduling: each video frame goes out when the audio pushed after it starts
to play. The sources here are stand-ins that only record (the real ones, in real rooms, are
exercised by test_avatar_session.py and test_browser_learner.py); the audio queue drains in
real time like rtc.AudioSource's."""

from __future__ import annotations

import asyncio

from livekit import rtc

from agent.sync import AV_OFFSET, EngineSynchronizer


class _Audio:
    def __init__(self) -> None:
        self.until = 0.0  # loop time when the queued audio has played out

    @property
    def queued_duration(self) -> float:
        return max(0.0, self.until - asyncio.get_running_loop().time())

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        now = asyncio.get_running_loop().time()
        self.until = max(self.until, now) + frame.duration

    def clear_queue(self) -> None:
        self.until = 0.0


class _Video:
    def __init__(self) -> None:
        self.at: list[float] = []

    def capture_frame(self, frame) -> None:
        self.at.append(asyncio.get_running_loop().time())


def _frame():
    return rtc.VideoFrame(2, 2, rtc.VideoBufferType.RGBA, bytes(16))


def _audio(ms: int):
    n = 48 * ms
    return rtc.AudioFrame(bytes(2 * n), 48000, 1, n)


async def test_a_frame_waits_for_the_audio_queued_before_it_and_clear_drops_it():
    audio, video = _Audio(), _Video()
    sync = EngineSynchronizer(audio, video)
    loop = asyncio.get_running_loop()

    t0 = loop.time()
    await sync.push(_frame())  # nothing queued: out at once
    assert len(video.at) == 1 and video.at[0] - t0 < 0.01

    await sync.push(_audio(100))  # 100 ms of speech waiting to play
    t1 = loop.time()
    await sync.push(_frame())
    assert len(video.at) == 1, "held until the queued audio has played"
    await asyncio.sleep(0.15)
    assert len(video.at) == 2 and 0.08 < video.at[1] - t1 < 0.13
    assert sync.frames_captured == 2

    await sync.push(_audio(200))
    await sync.push(_frame())
    await sync.clear_queue()  # interruption: the waiting frame goes with its audio
    await asyncio.sleep(0.25)
    assert len(video.at) == 2 and audio.queued_duration == 0
    await sync.push(_frame())
    assert len(video.at) == 3, "after a clear, frames go out at once again"
    await sync.aclose()


async def test_video_delay_captures_each_frame_that_long_after_its_audio_starts():
    audio, video = _Audio(), _Video()
    sync = EngineSynchronizer(audio, video, video_delay_s=0.04)
    loop = asyncio.get_running_loop()
    before = AV_OFFSET.collect()[0].samples
    count0 = next(s.value for s in before if s.name.endswith("_count"))

    t0 = loop.time()
    await sync.push(_frame())  # nothing queued: still one delay later
    assert video.at == [], "not before the delay"
    await sync.push(_audio(100))
    t1 = loop.time()
    await sync.push(_frame())  # its audio starts in 100 ms: out at 140
    await asyncio.sleep(0.2)
    assert len(video.at) == 2
    assert 0.035 < video.at[0] - t0 < 0.07
    assert 0.135 < video.at[1] - t1 < 0.17

    # the sender-side offset metric saw both frames, each about one delay late
    after = AV_OFFSET.collect()[0].samples
    count = next(s.value for s in after if s.name.endswith("_count"))
    total = next(s.value for s in after if s.name.endswith("_sum")) - next(
        s.value for s in before if s.name.endswith("_sum"))
    assert count - count0 == 2 and 0.07 < total < 0.12
    await sync.aclose()
