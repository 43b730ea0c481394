"""A voice agent that misbehaves on the wire cannot silence or kill the avatar.

Real livekit-server, Redis and worker process (`python -m agent start`, stall 1 s, at most 4 s of
audio queued ahead). The voice agent is :class:`~scripts.room_probe.RawVoiceAgent`: byte streams
written by hand (bad headers, streams left open, leaving mid-stream), the avatar's playback
notices recorded. The learner records what arrives. Each test ends by checking the tutor still
speaks the next utterance.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from avatar_pipeline.tts import default_engine
from config.fleet import SayRequest
from scripts.room_probe import Learner, RawVoiceAgent, dispatch
from scripts.servers import AvatarWorkerProcess
from tests.agent.test_avatar_session import backend_say

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
WORKER = "w-audio"
STALL_S, MAX_QUEUED_S = 1.0, 4.0


@pytest.fixture(scope="module")
def stack(livekit_server, redis_server):
    with AvatarWorkerProcess(livekit_server, redis_server.url, WORKER, capacity=4,
                             extra_env={"AVATAR_WORKER__STALL_S": str(STALL_S),
                                        "AVATAR_WORKER__MAX_QUEUED_S": str(MAX_QUEUED_S)}) as w:
        yield livekit_server, redis_server, w


@pytest.fixture(scope="module")
def speech():
    sp = default_engine().synthesize("Good morning. Let us read the next page together.", "en")
    return sp.pcm, sp.sample_rate, sp.duration_s


def _events(logfile: Path, name: str) -> list[dict]:
    lines = [json.loads(x) for x in logfile.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == name]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _lesson(lk, redis, lesson: str, agent: RawVoiceAgent | None = None):
    learner = Learner()
    await learner.join(lk, lesson)
    agent = agent or RawVoiceAgent()
    await agent.join(lk, lesson)
    await dispatch(lk, redis.url, WORKER, lesson)
    await learner.wait_tracks()
    return learner, agent


async def _heard(learner: Learner, agent: RawVoiceAgent, speech, n_before: int) -> dict:
    """Send one good utterance; it must play whole and be heard."""
    pcm, rate, duration = speech
    t0 = time.monotonic()
    await agent.send(pcm, rate)
    done = await agent.wait_finished(n_before + 1, duration + 10)
    assert len(done) == n_before + 1, "playback_finished for the good utterance"
    payload, t_done = done[-1]
    assert payload["interrupted"] is False
    assert abs(payload["playback_position"] - duration) < 0.25, payload
    _, audio = learner.window(t0, t_done)
    assert np.percentile(audio, 75) > 0.02, "the learner hears it"
    return payload


async def test_bad_stream_headers_end_only_their_segment(stack, speech):
    lk, redis, w = stack
    learner, agent = await _lesson(lk, redis, "bad-headers")
    try:
        rss0 = _rss_mb(w.proc.pid)
        noise = (np.random.default_rng(0).normal(0, 3000, 1000)).astype(np.int16)  # 2 kB
        bad = [{}, {"num_channels": "1"}, {"sample_rate": "abc", "num_channels": "1"},
               {"sample_rate": "24000", "num_channels": "0"},
               {"sample_rate": "24000", "num_channels": "3"},
               {"sample_rate": "0", "num_channels": "1"},
               {"sample_rate": "-24000", "num_channels": "1"},
               {"sample_rate": "1", "num_channels": "1"}]
        for attrs in bad:
            await agent.send(noise, 24000, attrs)
        done = await agent.wait_finished(len(bad), 10)
        assert len(done) == len(bad), "each refused stream still gets its playback_finished"
        assert all(p == {"playback_position": 0.0, "interrupted": True} for p, _ in done)
        assert not agent.started, "nothing of a refused stream plays"
        refused = _events(w.logfile, "audio_in.stream_refused")
        assert len(refused) >= len(bad) and all(e["lesson_id"] == "bad-headers" for e in refused)
        assert any("sample_rate 0 not one of" in e["reason"] for e in refused)

        await _heard(learner, agent, speech, len(bad))
        assert w.proc.poll() is None, "the worker lives"
        assert _rss_mb(w.proc.pid) - rss0 < 150, "and does not grow"
    finally:
        await agent.room.disconnect()
        await learner.leave(lk)


async def test_a_stalled_stream_ends_after_the_stall_and_plays_its_tail(stack, speech):
    lk, redis, _w = stack
    learner, agent = await _lesson(lk, redis, "stall")
    try:
        pcm, rate, _ = speech
        part = pcm[: rate * 3 // 2]  # 1.5 s, then the sender goes quiet without ending it
        t0 = time.monotonic()
        await agent.send(part, rate, speed=5.0, close=False)
        t_last = time.monotonic()
        done = await agent.wait_finished(1, 8)
        assert done, "a stalled stream still ends"
        payload, t_done = done[0]
        assert abs(payload["playback_position"] - 1.5) < 0.1, payload
        # it plays out in real time from its start, then waits STALL_S for more
        assert t_done - t_last < 1.5 - (t_last - t0) + STALL_S + 0.8
        await _heard(learner, agent, speech, 1)
    finally:
        await agent.room.disconnect()
        await learner.leave(lk)


async def test_a_voice_agent_can_queue_only_so_much_audio(stack, speech):
    lk, redis, w = stack
    learner, agent = await _lesson(lk, redis, "flood")
    try:
        pcm, rate, _ = speech
        flood = np.tile(pcm, int(np.ceil(30 * rate / len(pcm))))[: 30 * rate]  # 30 s
        t0 = time.monotonic()
        await agent.send(flood, rate, speed=40.0)
        sent_in = time.monotonic() - t0  # < 1 s unless the machine is very busy
        done = await agent.wait_finished(1, 15)
        assert done, "the flooded segment ends"
        pos, t_done = done[0][0]["playback_position"], done[0][1]
        # it was cut when it ran MAX_QUEUED_S ahead of real time: what played is that much
        # plus the time the sending took, and it ends that long after it began, not 30 s
        assert MAX_QUEUED_S - 0.5 < pos < MAX_QUEUED_S + sent_in + 1.5, (pos, sent_in)
        assert t_done - t0 < MAX_QUEUED_S + sent_in + 3.0
        cut = _events(w.logfile, "audio_in.stream_ended_early")
        assert any(e["reason"] == "truncated" and e["lesson_id"] == "flood" for e in cut)
        await _heard(learner, agent, speech, 1)
    finally:
        await agent.room.disconnect()
        await learner.leave(lk)


async def test_a_voice_agent_that_leaves_mid_stream_is_heard_when_it_returns(stack, speech):
    lk, redis, _w = stack
    lesson = "leave-rejoin"
    learner, agent = await _lesson(lk, redis, lesson)
    try:
        pcm, rate, _ = speech
        await agent.send(pcm[: len(pcm) // 2], rate, close=False)
        await agent.room.disconnect()  # gone mid-utterance, stream never ended
        t_left = time.monotonic()
        await asyncio.sleep(3.0)  # what had arrived (1.5 s) plays out, then the segment ends
        _, after = learner.window(t_left + 2.0, time.monotonic())
        assert after.size and np.percentile(after, 90) < 0.01, "the avatar stops speaking"

        again = await RawVoiceAgent().join(lk, lesson)  # the same identity comes back
        agent = again
        await _heard(learner, again, speech, 0)
        # the backend's lesson text still plays, and the face keeps moving after it
        t_say = time.monotonic()
        await backend_say(lk, lesson, SayRequest(text="Well done.", language="en"))
        await asyncio.sleep(3.0)
        _, said = learner.window(t_say, time.monotonic())
        assert np.percentile(said, 90) > 0.02, "the next /say is heard"
        t1 = time.monotonic()
        await asyncio.sleep(1.0)
        frames = [t for t in learner.video_t if t >= t1]
        assert len(frames) > 18, f"video keeps flowing: {len(frames)} frames in 1 s"
    finally:
        await agent.room.disconnect()
        await learner.leave(lk)


async def test_a_voice_agent_joining_late_is_heard_at_once(stack, speech):
    lk, redis, _w = stack
    for lesson in ("late-1", "late-2"):
        learner = Learner()
        await learner.join(lk, lesson)
        await dispatch(lk, redis.url, WORKER, lesson)
        await learner.wait_tracks()  # the avatar is in the room first
        agent = await RawVoiceAgent().join(lk, lesson)
        try:
            await _heard(learner, agent, speech, 0)  # sent the moment it joined
            assert agent.started, "playback_started too"
        finally:
            await agent.room.disconnect()
            await learner.leave(lk)


async def test_two_lessons_whose_voice_agents_share_an_identity_do_not_cross(stack, speech):
    lk, redis, _w = stack
    learner_a, agent_a = await _lesson(lk, redis, "same-id-a")
    learner_b, agent_b = await _lesson(lk, redis, "same-id-b")
    assert agent_a.identity == agent_b.identity
    try:
        pcm, rate, duration = speech
        sending = asyncio.create_task(agent_a.send(pcm, rate))
        await asyncio.sleep(1.0)
        assert await agent_b.clear_buffer() == "ok"  # lesson B interrupts its own (idle) avatar
        await sending
        done = await agent_a.wait_finished(1, duration + 10)
        assert done and done[0][0]["interrupted"] is False, "lesson A was not cut"
        assert abs(done[0][0]["playback_position"] - duration) < 0.25
        await _heard(learner_b, agent_b, speech, 0)
    finally:
        for a in (agent_a, agent_b):
            await a.room.disconnect()
        await learner_a.leave(lk)
        await learner_b.leave(lk)
