"""The avatar in real rooms, measured at a subscriber.

Starts livekit-server, Redis and one avatar worker (`python -m agent start`) on loopback; for
each of ``--lessons`` lessons, twice (first with one learner, as lessons run, then with the
learner's page in Chromium joined as well, which costs the 2-core box CPU): a learner
subscribes, the avatar is dispatched (as the router does), a stock livekit-agents voice agent (``DataStreamAudioOutput``) speaks one sentence of our
TTS through the avatar protocol. Per lesson it records

* dispatch -> the first avatar video frame at the learner, split at the moment the worker
  receives the job (from its log): LiveKit's part (the API call -> the job request; v1.13.5's
  agent RPC waits a fixed 200 ms for other nodes' claims after the first) and ours (job
  request -> room join, publish, the learner's subscription, the first frame);
* inside the worker, the first audio of the speech segment in -> the first frame showing it
  out (its ``engine.speech_started`` log line);
* the voice agent's first audio sent -> the first speech audio at the learner (end to end:
  data stream, jitter buffer, model lookahead, Opus, network, decode);
* the A/V offset at two learners in the same room: the lag of mouth openness behind the audio
  envelope (cross-correlated, both held while shown and played) minus the lag the same measure
  reads on the exact viseme track of the sentence (``reference_lag_ms``). One learner is a
  Python SDK subscriber, timed by arrival (it does no lip sync); the other is the learner's
  page in headless Chromium (``scripts/browser.py``), timed as the page presents each frame and
  plays the audio (after its output device's delay).

Before the lessons, each kind of learner is fed a flash and a tone that are in sync when sent
(``in_sync_source``) and the same measure is taken: that learner's own skew, reported beside.
The worker captures each frame ``video.delay_ms`` (40) after its audio starts to play, for
exactly that skew (``agent/sync.py``).

    .venv/bin/python -m benchmarks.worker_room [--lessons 7]

Writes benchmarks/results/worker_room.json and .png, naming the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from config.logs import setup_logging  # noqa: E402
from config.settings import Settings  # noqa: E402
from scripts.browser import BrowserLearner, browser_skew_ms  # noqa: E402
from scripts.room_probe import (  # noqa: E402
    Learner,
    dispatch,
    reference_lag_ms,
    speak,
    subscriber_skew_ms,
    voice_agent,
)  # noqa: E402
from scripts.servers import AvatarWorkerProcess, LiveKitServer, RedisServer  # noqa: E402

SENTENCE = ("Welcome back! Today we will describe the weather: it is sunny, windy and a little "
            "bit cold.")


def _wall(line: dict) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


async def one_lesson(lk, redis_url: str, lesson: str, worker, browser: bool) -> dict:
    if not browser:
        return await _one_lesson(lk, redis_url, lesson, worker, None)
    async with BrowserLearner(lk, lesson) as page:
        return await _one_lesson(lk, redis_url, lesson, worker, page)


async def _one_lesson(lk, redis_url: str, lesson: str, worker,
                      page: BrowserLearner | None) -> dict:
    learner = Learner()
    await learner.join(lk, lesson)
    vroom, out, started, finished = await voice_agent(lk, lesson)
    try:
        n_log = len(worker.log_lines())
        wall0, t_dispatch = time.time(), time.monotonic()
        await dispatch(lk, redis_url, "bench", lesson)
        await learner.wait_tracks(60)
        first_frame = learner.video_t[0] - t_dispatch
        got_job = next(_wall(x) for x in worker.log_lines()[n_log:]
                       if x.get("event") == "received job request") - wall0
        await asyncio.sleep(2.0)
        t_send = time.monotonic()
        duration = await speak(out, SENTENCE)
        deadline = time.monotonic() + duration + 10
        while not finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        t_done = time.monotonic()
        await asyncio.sleep(1.0)
        at, rms = np.array(learner.audio_t), np.array(learner.audio_rms)
        loud = at[(at > t_send) & (rms > 0.02)]
        first_audio = float(loud[0] - t_send) if loud.size else float("nan")
        lag = learner.lag_ms(t_send, t_done + 0.3)
        page_lag = page_out = float("nan")
        if page is not None:
            p0, p1 = await page.page_ms(t_send), await page.page_ms(t_done + 0.3)
            page_out = (await page.collect())["outputDelayMs"] or 0.0
            page_lag = page.lag_ms(p0, p1)
        starts = [x["start_ms"] for x in worker.log_lines()[n_log:]
                  if x.get("event") == "engine.speech_started"]
        return {"lesson": lesson, "learners": "python+chromium" if page else "python",
                "dispatch_to_first_frame_ms": round(first_frame * 1000, 1),
                "dispatch_to_job_ms": round(got_job * 1000, 1),
                "job_to_first_frame_ms": round((first_frame - got_job) * 1000, 1),
                "worker_speech_start_ms": starts[0] if starts else float("nan"),
                "frame_sizes": sorted(learner.sizes),
                "first_audio_sent_to_heard_ms": round(first_audio * 1000, 1),
                "av_lag_ms": lag, "av_offset_ms": lag - REFERENCE_LAG_MS[0],
                "av_lag_browser_ms": page_lag,
                "av_offset_browser_ms": page_lag - REFERENCE_LAG_MS[0],
                "browser_output_delay_ms": round(page_out, 1),
                "speech_s": round(duration, 2),
                "playback_finished": bool(finished),
                "playback_position_s": round(finished[0].playback_position, 2) if finished
                else None}
    finally:
        await vroom.disconnect()
        await learner.leave(lk)


REFERENCE_LAG_MS = [0.0]


async def run(lessons: int) -> dict:
    REFERENCE_LAG_MS[0] = reference_lag_ms(SENTENCE)
    rows = []
    with RedisServer() as redis, LiveKitServer() as lk, \
            AvatarWorkerProcess(lk, redis.url, "bench", capacity=4) as worker:
        skews = [await subscriber_skew_ms(lk, f"skew-{i}") for i in range(3)]
        browser_skews = [await browser_skew_ms(lk, f"skew-browser-{i}") for i in range(3)]
        # first the lessons as they run (one learner), then again with the browser page joined
        for i in tqdm(range(2 * lessons), desc="lessons"):
            rows.append(await one_lesson(lk, redis.url, f"bench-{i}", worker, i >= lessons))
    keys = ("dispatch_to_first_frame_ms", "dispatch_to_job_ms", "job_to_first_frame_ms",
            "worker_speech_start_ms", "first_audio_sent_to_heard_ms", "av_offset_ms")
    alone = [r for r in rows if r["learners"] == "python"]
    summary = {k: round(float(np.nanmedian([r[k] for r in alone])), 1) for k in keys}
    summary["av_offset_browser_ms"] = round(float(np.nanmedian(
        [r["av_offset_browser_ms"] for r in rows if r["learners"] != "python"])), 1)
    return {"benchmark": "worker_room", "machine": machine(), "lessons": rows,
            "reference_lag_ms": REFERENCE_LAG_MS[0],
            "subscriber_skew_ms": {"runs": skews, "median": float(np.median(skews)),
                                   "what": "the same measure on a 64x64 flash + 40 ms tone that "
                                           "are in sync when sent (scripts/room_probe.py)"},
            "browser_skew_ms": {"runs": browser_skews, "median": float(np.median(browser_skews)),
                                "what": "the same flash + tone in headless Chromium's learner "
                                        "page (scripts/browser.py)"},
            "video_delay_ms": Settings().video.delay_ms,
            "livekit": "v1.13.5 as the harness configures it (scripts/servers/livekit_server.py): "
                       "room.sync_streams true, rtc.pli_throttle 100ms",
            "how": "timings and av_offset_ms: lessons with one Python SDK learner; "
                   "av_offset_browser_ms: lessons with the Chromium page joined as well",
            "median": summary,
            "goal": {"dispatch_to_first_frame_ms": 500, "worker_speech_start_ms": 100,
                     "av_offset_ms": "+-20", "av_offset_browser_ms": "+-20"}}


def plot(p: dict) -> None:
    rows = [r for r in p["lessons"] if r["learners"] == "python"]
    web_rows = [r for r in p["lessons"] if r["learners"] != "python"]
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    x = np.arange(len(rows))
    lk = [r["dispatch_to_job_ms"] for r in rows]
    ours = [r["job_to_first_frame_ms"] for r in rows]
    ax[0].bar(x, lk, color="#aaaaaa", label="LiveKit: API call -> job at worker")
    ax[0].bar(x, ours, bottom=lk, color="#1f77b4", label="ours: job -> frame at learner")
    for a, key, goal, title in (
            (ax[0], "dispatch_to_first_frame_ms", 500, "dispatch -> first frame at learner"),
            (ax[1], "worker_speech_start_ms", 100, "in worker: first audio in -> its frame out"),
            (ax[2], "first_audio_sent_to_heard_ms", None, "first audio sent -> heard"),
            (ax[3], "av_offset_ms", 20, "A/V offset at learners (+ = video late)")):
        vals = [r[key] for r in rows]
        if key == "av_offset_ms":
            web = [r["av_offset_browser_ms"] for r in web_rows]
            a.bar(x - 0.2, vals, 0.4, color="#1f77b4",
                  label=f"Python SDK learner, median {np.nanmedian(vals):.0f} ms")
            a.bar(np.arange(len(web)) + 0.2, web, 0.4, color="#2ca02c",
                  label=f"Chromium page, median {np.nanmedian(web):.0f} ms")
            a.axhline(p["subscriber_skew_ms"]["median"], c="#1f77b4", ls=":", lw=1.5,
                      label="in-sync source at the Python learner "
                            f"{p['subscriber_skew_ms']['median']:.0f} ms")
            a.axhline(p["browser_skew_ms"]["median"], c="#2ca02c", ls=":", lw=1.5,
                      label=f"in-sync source in Chromium {p['browser_skew_ms']['median']:.0f} ms")
        else:
            if a is not ax[0]:
                a.bar(range(len(vals)), vals, color="#1f77b4")
            a.axhline(np.nanmedian(vals), c="k", lw=1,
                      label=f"median {np.nanmedian(vals):.0f} ms")
        if goal is not None:
            a.axhline(goal, ls="--", c="gray", lw=1, label=f"goal {goal} ms")
            if key == "av_offset_ms":
                a.axhline(-goal, ls="--", c="gray", lw=1)
        a.set(title=title, xlabel="lesson", ylabel="ms")
        a.legend(fontsize=8)
    fig.suptitle(f"Avatar in real LiveKit rooms (loopback) — {machine_label(p['machine'])}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "worker_room.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lessons", type=int, default=7)
    args = ap.parse_args()
    setup_logging("warning", "console")
    payload = asyncio.run(run(args.lessons))
    write_json("worker_room", payload)
    plot(payload)
    for r in payload["lessons"]:
        print(r)
    print("median:", payload["median"])


if __name__ == "__main__":
    main()
