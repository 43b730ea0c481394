"""The learner's page (web/learner.html) in a real browser: headless Debian Chromium with
livekit-client joins the lesson room; the stock voice agent speaks through our worker; the page
is shown the tutor at full size and frame rate, plays its voice, the mouth moves with it, and
in step with it (the A/V offset of what we send within +-40 ms, as the page presents and plays
it less the skew Chromium reports playing at)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from scripts.browser import BrowserLearner
from scripts.room_probe import dispatch, reference_lag_ms, speak_until_played, voice_agent
from scripts.servers import AvatarWorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
SENTENCE = "Good morning! Today we read a short story about a red boat and a blue bird."


async def test_learner_page_shows_and_plays_the_tutor(livekit_server, redis_server):
    lk, lesson = livekit_server, "browser-1"
    with AvatarWorkerProcess(lk, redis_server.url, "w-browser"):
        async with BrowserLearner(lk, lesson) as page:
            vroom, out, started, finished = await voice_agent(lk, lesson)
            try:
                await dispatch(lk, redis_server.url, "w-browser", lesson)
                for _ in range(100):  # the tutor's first frames reach the page
                    if len((await page.collect())["video"]) > 25:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)
                t_idle = await page.now_ms()
                stats0 = await page.receive_stats()
                await asyncio.sleep(1.5)
                t_speak = await page.now_ms()
                await speak_until_played(out, SENTENCE, finished)
                t_done = await page.now_ms()
                await asyncio.sleep(1.0)
                rec = await page.collect()
                stats = await page.receive_stats()
            finally:
                await vroom.disconnect()

    assert finished and not finished[0].interrupted
    v, a = np.array(rec["video"]), np.array(rec["audio"])
    shown = v[(v[:, 0] > t_idle) & (v[:, 0] < t_done)]
    fps = (len(shown) - 1) / ((shown[-1, 0] - shown[0, 0]) / 1000)
    v0, v1 = stats0["video"], stats["video"]
    decoded = (v1["frames_decoded"] - v0["frames_decoded"]) / ((v1["at_ms"] - v0["at_ms"]) / 1000)
    # 25 are sent; a capped encoding (WebRTC's default cap) decodes 20. With the page, the
    # worker, LiveKit and the test on 2 cores, 23.4-24.1 are decoded and 20.3-21.8 presented.
    assert decoded > 22, f"the page decodes {decoded:.1f} frames/s of the tutor's video"
    assert fps > 18, f"the page presents {fps:.1f} frames/s of 512x512 video"

    def window(x, t0, t1):
        return x[(x[:, 0] >= t0) & (x[:, 0] < t1), 1]

    speech_t0, speech_t1 = t_speak + 300, t_done - 300
    assert np.median(window(a, speech_t0, speech_t1)) > 0.02, "the tutor's voice is played"
    assert np.median(window(a, t_idle, t_speak)) < 0.005, "silence before it"
    idle_mouth, speech_mouth = window(v, t_idle, t_speak), window(v, speech_t0, speech_t1)
    assert np.percentile(speech_mouth, 90) > np.median(idle_mouth) + 3, "the mouth opens"
    assert speech_mouth.std() > 4 * max(idle_mouth.std(), 0.2), "and keeps moving"
    # One MediaStream for both tracks (LiveKit sync_streams + the worker's stream name): the
    # browser can line the tutor's audio and video up by their capture times.
    assert stats["audio"]["stream"] == stats["video"]["stream"], stats
    assert stats["video"]["stream"].endswith("|avatar"), stats
    # What the learner sees and hears, timed in the page: frames as presented, audio as
    # played (web/measure.js), against the same measure on the exact viseme track.
    offset = page.lag_ms(t_speak, t_done) - reference_lag_ms(SENTENCE)
    chromium = page.playout_estimate_skew_ms()
    print(f"A/V offset in the page: {offset:+.0f} ms; decoded {decoded:.1f} / presented "
          f"{fps:.1f} frames/s; receive delays: {stats}; Chromium's own estimate of video "
          f"ahead of audio: {chromium} ms")
    # What we send, apart from how Chromium plays it: the offset the page shows less the skew
    # Chromium itself reports playing at (from the capture times we sent, so an offset of ours
    # is not in it). On a quiet machine both are small (page +20 ms, Chromium -25 ms); when
    # the 2 cores are busy Chromium's own A/V sync slips (page -45/-50/-90 ms with Chromium
    # reporting +47/+71/+97 ms) while ours stays at +2..+21 ms. Chromium gives no estimate
    # now and then (once in a fresh clone's CI run): then only the page's offset is judged.
    if chromium is not None:
        ours = offset + chromium
        assert abs(ours) <= 40, f"A/V offset of the stream {ours:+.0f} ms (page {offset:+.0f} ms)"
    assert abs(offset) <= 150, f"A/V offset in the page {offset:+.0f} ms"
