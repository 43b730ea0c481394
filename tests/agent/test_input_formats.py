"""Every audio format a voice agent may send gets the same lip sync and the same start.

TTS plugins send 16, 22.05, 24, 44.1 or 48 kHz, mono or stereo. The worker resamples to the
engine's 16 kHz mono; whatever the resampler holds back or shifts must be accounted for, so the
mouth's offset from the audio at a learner, and when the first audio is heard, match the 16 kHz
mono case. First exactly, on the engine's simulated clock (the generator the worker runs, fed
20 ms chunks in real time); then in real rooms: real livekit-server, Redis, worker process, the
voice agent writing the stock avatar protocol's byte stream by hand (:class:`RawVoiceAgent`).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from agent.video_gen import EngineVideoGenerator
from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.engine import AvatarEngine, EngineConfig
from avatar_pipeline.tts import default_engine
from scripts.room_probe import Learner, RawVoiceAgent, dispatch, reference_lag_ms
from scripts.servers import AvatarWorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
WORKER = "w-formats"
SENTENCE = "Hello! Today we will practise the names of the colours: red, orange, purple and blue."
FORMATS = [(16000, 1), (16000, 2), (24000, 1), (24000, 2), (44100, 1), (44100, 2), (48000, 1),
           (48000, 2)]


@pytest.fixture(scope="module")
def stack(livekit_server, redis_server):
    with AvatarWorkerProcess(livekit_server, redis_server.url, WORKER, capacity=4) as w:
        yield livekit_server, redis_server, w


def _as_format(pcm: np.ndarray, rate_in: int, rate: int, channels: int) -> np.ndarray:
    """The sentence as a TTS plugin would send it (libwebrtc's resampler at its best quality,
    which shifts nothing in time: its output is aligned with its input)."""
    if rate != rate_in:
        rs = rtc.AudioResampler(rate_in, rate, quality=rtc.AudioResamplerQuality.VERY_HIGH)
        out = list(rs.push(rtc.AudioFrame(pcm.tobytes(), rate_in, 1, len(pcm)))) + rs.flush()
        pcm = np.concatenate([np.frombuffer(f.data, np.int16) for f in out])
    if channels == 2:
        pcm = np.repeat(pcm, 2)  # interleaved L R
    return pcm.astype(np.int16)


class _Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _engine_output(pcm: np.ndarray, rate: int, channels: int) -> tuple[int, np.ndarray]:
    """Feed the stream in 20 ms chunks in real time (simulated) through the worker's generator;
    return the tick of the first frame with audio and the audio played from then on."""
    clock = _Clock()
    eng = AvatarEngine(AvatarRegistry().default(), EngineConfig(fps=25),  # 48 kHz, as workers
                       clock=clock)
    frames = []
    session = eng.open_session(frames.append, render=False)
    gen = EngineVideoGenerator(session, asyncio.get_running_loop())
    session.on_frame = frames.append  # collect here, not through the generator's queue
    chunk = rate // 50  # 20 ms chunks; the engine ticks every 40 ms
    n = len(pcm) // channels
    for i in range(0, n, chunk):
        part = pcm[i * channels:min(n, i + chunk) * channels]
        await gen.push_audio(rtc.AudioFrame(part.tobytes(), rate, channels,
                                            len(part) // channels))
        clock.t += 0.020
        if (i // chunk) % 2 == 1:
            eng.tick()
    await gen.push_audio(AudioSegmentEnd())
    for _ in range(100):
        clock.t += 0.040
        eng.tick()
    first = next(k for k, f in enumerate(frames) if f.audio is not None)
    audio = np.concatenate([f.audio for f in frames[first:] if f.audio is not None])
    return first, audio


async def test_the_resampler_costs_no_time_and_shifts_nothing():
    sp = default_engine().synthesize(SENTENCE, "en")
    base_first, base = await _engine_output(_as_format(sp.pcm, sp.sample_rate, 16000, 1),
                                            16000, 1)
    for rate, channels in FORMATS[1:]:
        first, audio = await _engine_output(_as_format(sp.pcm, sp.sample_rate, rate, channels),
                                            rate, channels)
        # the worker's engine runs at 48 kHz: a 48 kHz stream is not resampled at all and may
        # start a tick sooner; every other format is, and must not start later than 16k mono
        assert first <= base_first, f"{rate} Hz x{channels}: speech starts at tick {first}, " \
                                    f"16 kHz mono at {base_first}"
        n = min(len(audio), len(base)) - 800
        a, b = audio[:n].astype(np.float32), base[:n].astype(np.float32)
        lags = range(-480, 481)  # +-10 ms at 48 kHz
        lag = max(lags, key=lambda k: float(np.dot(a[max(0, k):n + min(0, k)],
                                                   b[max(0, -k):n - max(0, k)])))
        assert abs(lag) <= 48, f"{rate} Hz x{channels}: its audio plays {lag / 48:+.1f} ms off"


async def _measure(lk, redis, lesson: str, pcm, rate: int, channels: int) -> tuple[float, float]:
    learner = Learner()
    await learner.join(lk, lesson)
    agent = await RawVoiceAgent().join(lk, lesson)
    try:
        await dispatch(lk, redis.url, WORKER, lesson)
        await learner.wait_tracks()
        await asyncio.sleep(1.5)
        t_send = time.monotonic()
        await agent.send(pcm, rate, chunk_ms=20, speed=1.0, channels=channels)
        done = await agent.wait_finished(1, 20)
        assert done and done[0][0]["interrupted"] is False
        t_done = done[0][1]
        await asyncio.sleep(0.5)
        at, rms = np.array(learner.audio_t), np.array(learner.audio_rms)
        first = at[(at > t_send) & (rms > 0.02)][0] - t_send
        lag = learner.lag_ms(t_send, t_done + 0.3)
        return lag - reference_lag_ms(SENTENCE), first * 1000
    finally:
        await agent.room.disconnect()
        await learner.leave(lk)


async def test_every_rate_and_channel_count_is_in_sync_like_16k_mono(stack):
    lk, redis, _w = stack
    sp = default_engine().synthesize(SENTENCE, "en")
    results = {}
    for rate, channels in FORMATS:
        pcm = _as_format(sp.pcm, sp.sample_rate, rate, channels)
        results[(rate, channels)] = await _measure(lk, redis, f"fmt-{rate}-{channels}", pcm,
                                                   rate, channels)
    # One reading at a Python learner is good to about +-20 ms under load, and now and then one
    # lands a video frame (40 ms) off: CI read +55 ms for two formats where the rest read
    # +5...+15, and here one stream's first audio came 107 ms after 16 kHz mono's (300-350 ms
    # in every other run). A format read out of line is measured twice more and judged by the
    # median of its three readings (16 kHz mono too, when it is the reference): a shift the
    # format itself causes (the stereo stream) shows in all three.
    # In one CI run all three readings of 16 kHz mono sat a frame off the rest (+50/+45/+35
    # against -30...+5); in every run here and every other CI run it read -20...+30. So a room
    # tells formats apart only to about a frame and a half (60 ms), which still catches the
    # issue's 150 ms; the exact comparison, to a millisecond on the engine's clock, is
    # test_the_resampler_costs_no_time_and_shifts_nothing.
    again: set = set()

    async def remeasure(fmt):
        if fmt in again:
            return
        again.add(fmt)
        rate, channels = fmt
        pcm = _as_format(sp.pcm, sp.sample_rate, rate, channels)
        readings = [results[fmt]] + [
            await _measure(lk, redis, f"fmt-{rate}-{channels}-again{k}", pcm, rate, channels)
            for k in range(2)]
        print(fmt, "measured again:", readings)
        results[fmt] = tuple(np.median(np.array(readings), axis=0))

    for _ in range(2):  # twice: a reference measured again judges the others anew
        for fmt in list(results):
            median = np.median([o for o, _ in results.values()])
            if abs(results[fmt][0] - median) > 40 or abs(results[fmt][0]) > 60:
                await remeasure(fmt)
            if results[fmt][1] - results[(16000, 1)][1] > 80:
                await remeasure(fmt)
                await remeasure((16000, 1))
    print({k: (round(a), round(b)) for k, (a, b) in results.items()})
    # every format within +-60 ms, together within +-40 ms, none apart from the others by more
    # than 60, and first heard no more than 80 ms after 16 kHz mono
    offsets = np.array([o for o, _ in results.values()])
    base_first = results[(16000, 1)][1]
    for fmt, (offset, first) in results.items():
        assert abs(offset) <= 60, f"{fmt}: A/V offset {offset:+.0f} ms"
        assert abs(offset - np.median(offsets)) <= 60, f"{fmt}: {offset:+.0f} ms vs {offsets}"
        # a room adds +-40 ms of its own to when sound is first heard (ticks, Opus frames, the
        # learner's jitter buffer); the stereo stream came 150 ms late
        assert first - base_first <= 80, f"{fmt}: first audio {first:.0f} ms vs {base_first:.0f}"
    assert abs(float(np.mean(offsets))) <= 40, offsets
