"""The avatar in real rooms, measured at a subscriber.

Starts livekit-server, Redis and one avatar worker (`python -m agent start`) on loopback; for
each of ``--lessons`` lessons: a learner subscribes, the avatar is dispatched (as the router
does), a stock livekit-agents voice agent (``DataStreamAudioOutput``) speaks one sentence of our
TTS through the avatar protocol. Per lesson it records

* dispatch -> the first avatar video frame at the learner;
* the voice agent's first audio sent -> the first speech audio at the learner (end to end:
  data stream, jitter buffer, model lookahead, Opus, network, decode);
* the A/V offset at the learner (mouth openness vs audio envelope, cross-correlated), by
  arrival time: a Python SDK subscriber does no receiver-side lip sync, so VP8 encode/decode
  time counts against video here, where a browser would re-align by capture time.

    .venv/bin/python -m benchmarks.worker_room [--lessons 5]

Writes benchmarks/results/worker_room.json and .png, naming the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from config.logs import setup_logging  # noqa: E402
from scripts.room_probe import Learner, dispatch, speak, voice_agent  # noqa: E402
from scripts.servers import AvatarWorkerProcess, LiveKitServer, RedisServer  # noqa: E402

SENTENCE = ("Welcome back! Today we will describe the weather: it is sunny, windy and a little "
            "bit cold.")


async def one_lesson(lk, redis_url: str, lesson: str) -> dict:
    learner = Learner()
    await learner.join(lk, lesson)
    vroom, out, started, finished = await voice_agent(lk, lesson)
    try:
        t_dispatch = time.monotonic()
        await dispatch(lk, redis_url, "bench", lesson)
        await learner.wait_tracks(60)
        first_frame = learner.video_t[0] - t_dispatch
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
        offset = learner.av_offset_ms(t_send, t_done + 0.3)
        return {"lesson": lesson, "dispatch_to_first_frame_ms": round(first_frame * 1000, 1),
                "first_audio_sent_to_heard_ms": round(first_audio * 1000, 1),
                "av_offset_ms": offset, "speech_s": round(duration, 2),
                "playback_finished": bool(finished),
                "playback_position_s": round(finished[0].playback_position, 2) if finished
                else None}
    finally:
        await vroom.disconnect()
        await learner.leave(lk)


async def run(lessons: int) -> dict:
    rows = []
    with RedisServer() as redis, LiveKitServer() as lk, \
            AvatarWorkerProcess(lk, redis.url, "bench", capacity=4):
        for i in tqdm(range(lessons), desc="lessons"):
            rows.append(await one_lesson(lk, redis.url, f"bench-{i}"))
    keys = ("dispatch_to_first_frame_ms", "first_audio_sent_to_heard_ms", "av_offset_ms")
    summary = {k: round(float(np.nanmedian([r[k] for r in rows])), 1) for k in keys}
    return {"benchmark": "worker_room", "machine": machine(), "lessons": rows,
            "median": summary,
            "goal": {"dispatch_to_first_frame_ms": 500, "av_offset_ms": "+-20"}}


def plot(p: dict) -> None:
    rows = p["lessons"]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    for a, key, goal, title in (
            (ax[0], "dispatch_to_first_frame_ms", 500, "dispatch -> first frame at learner"),
            (ax[1], "first_audio_sent_to_heard_ms", None, "first audio sent -> heard"),
            (ax[2], "av_offset_ms", 20, "A/V offset at learner (+ = video late)")):
        vals = [r[key] for r in rows]
        a.bar(range(len(vals)), vals, color="#1f77b4")
        a.axhline(np.nanmedian(vals), c="k", lw=1, label=f"median {np.nanmedian(vals):.0f} ms")
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
    ap.add_argument("--lessons", type=int, default=5)
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
