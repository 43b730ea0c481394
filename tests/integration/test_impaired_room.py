"""A lesson over an impaired network: real livekit-server in a network namespace of its own,
the learner in another, the worker and the voice agent reaching LiveKit over a veth pair; 3 %
of the packets into LiveKit and into the learner are dropped (nftables), and once the network
stops dead for 500 ms; in another lesson every packet into LiveKit from the root side and into
the learner waits 80 ms plus a jitter (NFQUEUE and a userspace delayer, scripts/netns_delay.py:
this kernel has no ``tc netem``). What a learner and a voice agent must still get: every
utterance played whole, heard, in sync, and no session lost. The jitter buffer's behaviour on
recorded and generated network traces is tested in tests/pipeline/test_jitter.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc

from avatar_pipeline.tts import default_engine
from config.fleet import avatar_identity, room_name
from scripts import netns
from scripts.browser import BrowserLearner
from scripts.room_probe import RawVoiceAgent, dispatch, lag_ms, reference_lag_ms, token
from scripts.servers import AvatarWorkerProcess, free_port
from scripts.servers.livekit_server import NamespacedLiveKitServer

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
WORKER = "w-impaired"
SENTENCE = "Hello! Today we will practise the names of the colours: red, orange, purple and blue."
ROOT = Path(__file__).resolve().parents[2]
WHY_NOT = netns.available()
WHY_NO_DELAY = WHY_NOT or netns.delay_available()


@pytest.fixture(scope="module")
def impaired(redis_server):
    if WHY_NOT:
        pytest.skip(f"network namespaces cannot be made here ({WHY_NOT}); it runs as root "
                    "with iproute2 (ip netns, veth) and nftables, as on the project's machines")
    port = free_port()
    with netns.Namespaces() as ns, NamespacedLiveKitServer(ns) as lk, AvatarWorkerProcess(
            lk, redis_server.url, WORKER, capacity=2,
            extra_env={"AVATAR_METRICS_PORT": str(port)}) as w:
        yield ns, lk, redis_server, w, port


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def _avatar_joined(agent: RawVoiceAgent, lesson: str, timeout: float = 30) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while avatar_identity(lesson) not in {p.identity for p in
                                          agent.room.remote_participants.values()}:
        assert time.monotonic() < deadline, "the avatar never joined"
        await asyncio.sleep(0.1)


def _candidates(logfile: Path) -> dict:
    """LiveKit's ICE candidates for the last participant it gave up on, from its JSON log."""
    for line in reversed(logfile.read_text(errors="replace").splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "removing participant without connection":
            return {k: v for k, v in rec.items() if "andidate" in k}
    return {}


async def _join_or_skip(lk, lesson: str) -> RawVoiceAgent:
    """The voice agent joins from the root namespace before any impairment. A host whose root
    namespace cannot reach a namespaced LiveKit's media over UDP (a firewall on the sandbox the
    tests run in) cannot run this test at all: that is skipped with what LiveKit saw, not
    reported as a lesson that failed."""
    agent = RawVoiceAgent()
    try:
        await agent.join(lk, lesson)
    except rtc.ConnectError as exc:
        pytest.skip(f"no WebRTC path from the root namespace to LiveKit at {lk.url} before any "
                    f"impairment ({exc}); it runs where UDP passes between the root namespace "
                    f"and a veth namespace; what LiveKit tried: {_candidates(lk.logfile)}")
    return agent


async def _learner(ns, lk, lesson: str, seconds: float, out: Path):
    """The learner, in its own namespace, recording for ``seconds`` into ``out``."""
    return await asyncio.create_subprocess_exec(
        *ns.exec_argv(ns.learner), sys.executable, "-m", "scripts.netns_learner",
        lk.learner_url, token(lk, "learner", room_name(lesson)), lesson, str(seconds), str(out),
        cwd=ROOT)


async def _start(lk, redis, agent: RawVoiceAgent, lesson: str, port: int) -> float:
    """The avatar dispatched and subscribed to; the worker's underrun count then."""
    await dispatch(lk, redis.url, WORKER, lesson)
    await _avatar_joined(agent, lesson)
    await asyncio.sleep(4.0)  # the learner subscribes
    return _metric(port, "avatar_audio_underruns_total")


async def _utterance(agent: RawVoiceAgent, sp, k: int, during=None) -> tuple[float, float]:
    """The voice agent streams ``sp`` a little faster than real time (a streaming TTS, so a
    stall empties the buffer), ``during`` (a coroutine function) runs meanwhile; the avatar
    must report it played whole. (start, playback_finished) on the monotonic clock."""
    t0 = time.monotonic()
    send = asyncio.create_task(agent.send(sp.pcm, sp.sample_rate, speed=1.2))
    if during is not None:
        await during()
    await send
    done = await agent.wait_finished(k + 1, sp.duration_s + 15)
    assert len(done) == k + 1, f"utterance {k}: no playback_finished"
    payload, t_done = done[-1]
    assert payload["interrupted"] is False, payload
    assert abs(payload["playback_position"] - sp.duration_s) < 0.3, payload
    await asyncio.sleep(2.0)
    return t0, t_done


async def _heard_in_sync(learner, out: Path, seconds: float, spans) -> tuple[dict, list[float]]:
    """Every utterance heard by the learner; the A/V offset of each (ms, + = video late)."""
    rc = await asyncio.wait_for(learner.wait(), seconds + 60)
    assert rc == 0, "the learner (in its own namespace) ran to the end"
    got = json.loads(await asyncio.to_thread(out.read_text))
    assert got["first_frame_s"] < 10, got["first_frame_s"]
    at, rms = np.array(got["audio_t"]), np.array(got["audio_rms"])
    ref = reference_lag_ms(SENTENCE)
    offsets = []
    for k, (t0, t_done) in enumerate(spans):
        heard = rms[(at > t0) & (at < t_done)]
        assert np.percentile(heard, 75) > 0.02, f"utterance {k} is heard"
        offsets.append(lag_ms(got["audio_t"], got["audio_rms"], got["video_t"], got["mouth"],
                              t0, t_done + 0.3) - ref)
    return got, offsets


async def test_a_lesson_survives_loss_and_a_stall(impaired, tmp_path):
    ns, lk, redis, w, port = impaired
    lesson, out = "impaired", tmp_path / "learner.json"
    sp = default_engine().synthesize(SENTENCE, "en")
    seconds = 3 * (sp.duration_s + 2.5) + 12
    agent = await _join_or_skip(lk, lesson)
    learner = await _learner(ns, lk, lesson, seconds, out)

    async def stall() -> None:
        await asyncio.sleep(1.0)
        await ns.stall(0.5)

    try:
        underruns0 = await _start(lk, redis, agent, lesson, port)
        ns.loss(3)
        spans = [await _utterance(agent, sp, k, stall if k == 1 else None) for k in range(3)]
        ns.loss(0)
        underruns = _metric(port, "avatar_audio_underruns_total") - underruns0
        assert w.proc.poll() is None, "the worker lives"
    finally:
        ns.loss(0)
        await agent.room.disconnect()
    got, offsets = await _heard_in_sync(learner, out, seconds, spans)
    held = [e["longest_gap_s"] for e in w.log_lines()
            if e.get("event") == "audio_in.stream_held_up"]
    print({"underruns": underruns, "av_offsets_ms": [round(o) for o in offsets],
           "first_frame_s": round(got["first_frame_s"], 2), "held_up_s": held})
    # the stall held the voice agent's stream up (SCTP retransmits a second later) and ops
    # can read it in the worker's log; the utterance still played whole (_utterance)
    assert held and max(held) > 1.0, held
    # One reading at a Python learner is good to about +-20 ms (a fresh clone's CI read +45 once
    # where five runs read -25...+30): each utterance within +-60 ms, the two together within
    # +-40. The stall freezes picture and sound for half a second: judged apart.
    for k in (0, 2):
        assert abs(offsets[k]) <= 60, f"utterance {k}: A/V offset {offsets[k]:+.0f} ms"
    assert abs(offsets[0] + offsets[2]) / 2 <= 40, f"A/V offsets {offsets[0]:+.0f}, {offsets[2]:+.0f}"
    assert abs(offsets[1]) <= 80, f"the stalled utterance: A/V offset {offsets[1]:+.0f} ms"
    assert underruns <= 2, f"{underruns} underruns: the stall is one, loss alone makes none"


@pytest.mark.skipif(bool(WHY_NO_DELAY), reason=f"no delay here: {WHY_NO_DELAY}")
async def test_a_lesson_plays_through_delay_jitter_and_loss(impaired):
    """80 ms plus a half-normal jitter (scale 25 ms: up to ~60 ms more, packets bunched up as
    a queue drains) on the voice agent's audio into LiveKit, the worker's media into LiveKit,
    and everything into the learner, who is the learner page in Chromium (in its namespace):
    a browser lines audio and video up under jitter, as learners get them; the third utterance
    also loses 3 % of the packets on both links (delay, jitter and loss at once). (The Python SDK
    hands video over as soon as it is decoded while its audio waits in NetEq's buffer, so it
    reads the video 60-90 ms early here: its own receive side, not the stream)."""
    ns, lk, redis, w, port = impaired
    lesson = "delayed"
    sp = default_engine().synthesize(SENTENCE, "en")
    agent = await _join_or_skip(lk, lesson)
    try:
        async with BrowserLearner(lk, lesson, netns=ns.learner, url=lk.learner_url) as page:
            underruns0 = await _start(lk, redis, agent, lesson, port)
            for _ in range(100):  # the tutor's first frames reach the page
                if len((await page.collect())["video"]) > 25:
                    break
                await asyncio.sleep(0.2)
            with ns.delay(80, 25) as delayed:
                await asyncio.sleep(2.0)  # the page's and the worker's buffers meet the jitter
                windows = []
                for k in range(3):
                    if k == 2:  # the last utterance also loses 3 % of its packets, both links
                        ns.loss(3)
                    t0 = await page.now_ms()
                    await _utterance(agent, sp, k)
                    windows.append((t0, await page.now_ms()))
                ns.loss(0)
            await page.collect()
        underruns = _metric(port, "avatar_audio_underruns_total") - underruns0
        assert w.proc.poll() is None, "the worker lives"
    finally:
        ns.loss(0)
        await agent.room.disconnect()
    audio = np.array(page.record["audio"])
    ref = reference_lag_ms(SENTENCE)
    offsets = [page.lag_ms(a, b) - ref for a, b in windows]
    # Chromium's A/V sync moves while the jitter buffers adapt: its skew is taken per utterance
    skews = [page.playout_estimate_skew_ms(a, b) for a, b in windows]
    print({"underruns": underruns, "page_av_offsets_ms": [round(o) for o in offsets],
           "chromium_skew_ms": skews, "delayed": delayed})
    for where in (ns.core, ns.learner):  # the impairment really happened, on both links
        assert delayed[where]["packets"] > 500 and delayed[where]["wait_ms_p50"] >= 80, delayed
    for k, (a, b) in enumerate(windows):
        heard = audio[(audio[:, 0] > a + 300) & (audio[:, 0] < b - 2300), 1]
        assert np.percentile(heard, 75) > 0.02, f"utterance {k} is heard in the page"
    # As tests/agent/test_browser_learner.py judges it: what we send (the page's offset less
    # the skew Chromium reports playing at) and what the page shows. Under this jitter Chromium
    # itself plays video up to ~160 ms off its audio while its buffers adapt (page -125..+155
    # ms with Chromium reporting +85..-156 over seven runs); what we send stayed -41..+22 ms.
    for k, (off, chromium) in enumerate(zip(offsets, skews, strict=True)):
        if chromium is not None:
            assert abs(off + chromium) <= 60, f"utterance {k}: stream A/V {off + chromium:+.0f} ms"
        assert abs(off) <= 200, f"utterance {k}: A/V offset in the page {off:+.0f} ms"
    assert underruns <= 1, f"{underruns} underruns under delay and jitter, then 3 % loss too"
