"""The viseme stream (docs/viseme-stream.md) for clients that draw their own avatar: the worker
publishes each frame's 15 viseme weights and blink, stamped with when its audio plays; a page
that draws the tutor on a canvas from it (web/visemes.html, headless Chromium, the tutor's audio
only) moves the mouth with the voice, in step with the audio it plays. A lesson joined for
visemes only gets an avatar that publishes its voice and the stream, and no video."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from livekit import api, rtc

from config.fleet import VISEME_TOPIC, room_name
from scripts.browser import BrowserLearner
from scripts.room_probe import (
    VOICE,
    dispatch,
    reference_lag_ms,
    speak_until_played,
    token,
    voice_agent,
)
from scripts.servers import DEV_API_KEY, AvatarWorkerProcess, RouterProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
SENTENCE = "Good morning! Today we read a short story about a red boat and a blue bird."


async def test_a_page_draws_the_tutor_from_the_viseme_stream_in_step_with_its_voice(
        livekit_server, redis_server):
    lk, lesson = livekit_server, "visemes-1"
    packets: list[tuple[float, dict]] = []
    sub = rtc.Room()  # a plain SDK client reads the same stream

    @sub.on("data_received")
    def _on_data(p: rtc.DataPacket) -> None:
        if p.topic == VISEME_TOPIC:
            packets.append((time.time() * 1000, json.loads(p.data)))

    with AvatarWorkerProcess(lk, redis_server.url, "w-visemes",
                             extra_env={"AVATAR_WORKER__VISEME_STREAM": "true"}):
        await sub.connect(lk.url, token(lk, "client-sdk", room_name(lesson)))
        async with BrowserLearner(lk, lesson, page="visemes.html") as page:
            vroom, out, _started, finished = await voice_agent(lk, lesson)
            try:
                await dispatch(lk, redis_server.url, "w-visemes", lesson)
                for _ in range(150):
                    if (await page.js("window.visemeClient.packets")) > 25:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2.0)
                t_idle = await page.now_ms()
                await asyncio.sleep(1.5)
                t_speak = await page.now_ms()
                await speak_until_played(out, SENTENCE, finished)
                t_done = await page.now_ms()
                await asyncio.sleep(1.0)
                rec = await page.collect()
                client = await page.js("window.visemeClient")
                kinds = await page.js(
                    "[...window.lkRoom.remoteParticipants.values()].flatMap(p => "
                    "[...p.trackPublications.values()].filter(t => t.isSubscribed)"
                    ".map(t => t.kind))")
            finally:
                await vroom.disconnect()
                await sub.disconnect()

    # the protocol, as any SDK client sees it
    assert len(packets) > 50
    got_at, first = packets[-1]
    assert first["v"] == 1 and first["fps"] == 25
    rows = np.array([r for _, p in packets for r in p["f"]])
    assert rows.shape[1] == 16, "15 viseme weights and blink per frame"
    assert np.allclose(rows[:, :15].sum(1), 1.0, atol=0.02) and (rows >= 0).all()
    assert rows[:, 15].max() > 0.5, "the tutor blinks"
    ts = np.array([p["t"] for _, p in packets])
    assert (np.abs(np.diff(ts) - 80) < 60).mean() > 0.9, "two frames per packet, 80 ms apart"
    leads = np.array([p["t"] - at for at, p in packets])
    print(f"frames arrive {np.median(-leads):+.0f} ms after their audio's sender time "
          f"(median), packets {len(packets)}, page drew {client['drawn']} frames")
    assert np.median(np.abs(leads)) < 500, "stamped with the sender's clock, at play time"

    # the page: the tutor's audio only, a mouth that moves with it, in step
    assert kinds == ["audio"], kinds
    assert client["offsetMs"] is not None, "the page maps sender time to its own playout"
    print(f"page's mapping: network+clock {client['netMs']:.0f} ms, jitter buffer "
          f"{client['jitterMs']:.0f} ms, output {client['outputMs']:.0f} ms")
    v, a = np.array(rec["video"]), np.array(rec["audio"])

    def window(x, t0, t1):
        return x[(x[:, 0] >= t0) & (x[:, 0] < t1), 1]

    idle, talk = window(v, t_idle, t_speak), window(v, t_speak + 300, t_done - 300)
    assert np.median(window(a, t_speak + 300, t_done - 300)) > 0.02, "the voice is played"
    assert np.percentile(talk, 90) > 30 and np.median(idle) < 5, "the mouth opens to speak"
    offset = page.lag_ms(t_speak, t_done) - reference_lag_ms(SENTENCE)
    print(f"drawn mouth vs played voice: {offset:+.0f} ms")
    assert abs(offset) <= 80, f"the drawn mouth is {offset:+.0f} ms off its voice"


def _join(router, lesson: str, **extra) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://{router.address}/v1/lessons/{lesson}/join", method="POST",
        data=json.dumps({"user_id": "u-draw", "display_name": "Ada", **extra}).encode(),
        headers={"X-API-Key": DEV_API_KEY, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_a_visemes_only_lesson_publishes_voice_and_visemes_and_no_video(
        livekit_server, redis_url):
    lk, lesson = livekit_server, "visemes-2"
    with AvatarWorkerProcess(lk, redis_url, "w-vonly"), RouterProcess(lk, redis_url) as router:
        status, body = await asyncio.to_thread(_join, router, "visemes-x", output="hologram")
        assert status == 422 and "output" in json.dumps(body), body
        status, joined = await asyncio.to_thread(_join, router, lesson, output="visemes",
                                                 voice_agent_identity=VOICE)
        assert status == 200, joined
        async with BrowserLearner(lk, lesson, page="visemes.html") as page:
            vroom, out, _started, finished = await voice_agent(lk, lesson)
            try:
                for _ in range(150):
                    if (await page.js("window.visemeClient.packets")) > 10:
                        break
                    await asyncio.sleep(0.2)
                async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
                    res = await lkapi.room.list_participants(
                        api.ListParticipantsRequest(room=room_name(lesson)))
                avatar = next(p for p in res.participants if p.identity == joined["avatar_identity"])
                assert [t.type for t in avatar.tracks] == [api.TrackType.AUDIO], avatar.tracks
                await asyncio.sleep(1.0)
                t_speak = await page.now_ms()
                await speak_until_played(out, SENTENCE, finished)
                t_done = await page.now_ms()
                rec = await page.collect()
            finally:
                await vroom.disconnect()
    assert finished and not finished[0].interrupted, "the voice agent's speech played out"
    v = np.array(rec["video"])
    talk = v[(v[:, 0] > t_speak + 300) & (v[:, 0] < t_done - 300), 1]
    assert np.percentile(talk, 90) > 30, "the drawn mouth speaks"
    offset = page.lag_ms(t_speak, t_done) - reference_lag_ms(SENTENCE)
    print(f"visemes only: drawn mouth vs played voice {offset:+.0f} ms")
    assert abs(offset) <= 80
