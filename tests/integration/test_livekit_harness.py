"""Proof that the LiveKit harness is real: media flows between two participants on the real
livekit-server, and an explicit dispatch reaches exactly the worker registered under that name."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from livekit import api, rtc

pytestmark = pytest.mark.livekit

TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3  # of full scale; RMS = amplitude / sqrt(2)
SAMPLE_RATE = 48000
W, H = 320, 240
COLORS = [(230, 40, 40), (40, 200, 60), (40, 80, 230)]  # cycled every 10 video frames


def token(server, identity: str, room: str) -> str:
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def _publish(room: rtc.Room, stop: asyncio.Event) -> None:
    audio_src = rtc.AudioSource(SAMPLE_RATE, 1)
    video_src = rtc.VideoSource(W, H)
    await room.local_participant.publish_track(
        rtc.LocalAudioTrack.create_audio_track("tone", audio_src),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    await room.local_participant.publish_track(
        rtc.LocalVideoTrack.create_video_track("bars", video_src),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))

    spf = SAMPLE_RATE // 100  # 10 ms audio frames
    t = np.arange(spf)
    n = 0
    frame_no = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not stop.is_set():
        phase = 2 * np.pi * TONE_HZ * (n * spf + t) / SAMPLE_RATE
        pcm = (TONE_AMPLITUDE * 32767 * np.sin(phase)).astype(np.int16)
        await audio_src.capture_frame(rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, spf))
        n += 1
        if n % 4 == 0:  # 25 fps video
            rgba = np.empty((H, W, 4), np.uint8)
            rgba[..., :3] = COLORS[(frame_no // 10) % len(COLORS)]
            rgba[..., 3] = 255
            video_src.capture_frame(rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, rgba.tobytes()))
            frame_no += 1
        await asyncio.sleep(max(0.0, start + n * 0.01 - loop.time()))


async def test_two_participants_exchange_audio_and_video(livekit_server):
    room_name = "harness-media"
    pub, sub = rtc.Room(), rtc.Room()
    got_audio: asyncio.Future = asyncio.get_running_loop().create_future()
    got_video: asyncio.Future = asyncio.get_running_loop().create_future()

    @sub.on("track_subscribed")
    def _on_track(track, publication, participant):
        fut = got_audio if track.kind == rtc.TrackKind.KIND_AUDIO else got_video
        if not fut.done():
            fut.set_result(track)

    await sub.connect(livekit_server.url, token(livekit_server, "listener", room_name))
    await pub.connect(livekit_server.url, token(livekit_server, "speaker", room_name))
    stop = asyncio.Event()
    publisher = asyncio.create_task(_publish(pub, stop))
    try:
        audio_track = await asyncio.wait_for(got_audio, 20)
        video_track = await asyncio.wait_for(got_video, 20)

        # Audio: collect ~1.5 s after the jitter buffer settles; check level and pitch.
        samples = []
        async for ev in rtc.AudioStream(audio_track, sample_rate=SAMPLE_RATE, num_channels=1):
            samples.append(np.frombuffer(ev.frame.data, np.int16))
            if sum(len(s) for s in samples) >= SAMPLE_RATE * 3:
                break
        x = np.concatenate(samples)[SAMPLE_RATE * 3 // 2:].astype(np.float64) / 32767
        rms = float(np.sqrt(np.mean(x**2)))
        expected = TONE_AMPLITUDE / np.sqrt(2)
        assert 0.6 * expected < rms < 1.4 * expected, f"tone RMS {rms:.3f}, sent {expected:.3f}"
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(x)
        assert abs(peak_hz - TONE_HZ) < 5, f"received tone at {peak_hz:.1f} Hz"

        # Video: frames arrive at the published size and their colour changes with the source.
        seen = set()
        frames = 0
        async for ev in rtc.VideoStream(video_track, format=rtc.VideoBufferType.RGBA):
            frames += 1
            rgb = np.frombuffer(ev.frame.data, np.uint8).reshape(ev.frame.height, ev.frame.width, 4)
            mean = rgb[..., :3].reshape(-1, 3).mean(0)
            seen.add(int(np.argmax(mean)))  # dominant channel: 0 red, 1 green, 2 blue
            if len(seen) == 3 or frames > 200:
                break
        assert (ev.frame.width, ev.frame.height) == (W, H)
        assert seen == {0, 1, 2}, f"dominant colours seen: {seen} in {frames} frames"
    finally:
        stop.set()
        await publisher
        await pub.disconnect()
        await sub.disconnect()


def _start_worker(livekit_server, agent_name: str, out: Path) -> subprocess.Popen:
    env = {**os.environ, "LIVEKIT_URL": livekit_server.url,
           "LIVEKIT_API_KEY": livekit_server.api_key,
           "LIVEKIT_API_SECRET": livekit_server.api_secret}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("minimal_worker.py")), agent_name, str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(str(out) + ".log", "w"))


def _jobs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _registered(out: Path, timeout: float = 30) -> None:
    """Wait for the worker's ``worker_registered`` event (it writes OUT.ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(str(out) + ".ready").exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"worker never registered:\n{Path(str(out) + '.log').read_text()[-3000:]}")


async def test_explicit_dispatch_reaches_only_the_named_worker(livekit_server, tmp_path):
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    workers = [_start_worker(livekit_server, "avatar-w-a", out_a),
               _start_worker(livekit_server, "avatar-w-b", out_b)]
    try:
        for out in (out_a, out_b):
            await asyncio.to_thread(_registered, out)
        async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                                  livekit_server.api_secret) as lkapi:
            meta = json.dumps({"lesson_id": "L1", "worker_id": "w-a", "fence": 7})
            await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                agent_name="avatar-w-a", room="dispatch-room", metadata=meta))
            deadline = time.monotonic() + 20
            while not _jobs(out_a) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            jobs = _jobs(out_a)
            assert len(jobs) == 1, f"worker a got {jobs}"
            assert jobs[0]["room"] == "dispatch-room"
            assert json.loads(jobs[0]["metadata"]) == {"lesson_id": "L1", "worker_id": "w-a",
                                                       "fence": 7}
            # The job really joined the room: the server lists its participant.
            parts = await lkapi.room.list_participants(
                api.ListParticipantsRequest(room="dispatch-room"))
            assert jobs[0]["identity"] in {p.identity for p in parts.participants}
            await asyncio.sleep(2)  # give a wrong dispatch time to show up
            assert _jobs(out_b) == [], "the other worker must not get the job"
            assert len(_jobs(out_a)) == 1
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(10)
            except subprocess.TimeoutExpired:
                w.kill()
