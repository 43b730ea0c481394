"""A learner run as its own process (inside a network namespace, for impaired-room tests):
joins with a given token, records what arrives from the avatar for a while (the same records
as :class:`scripts.room_probe.Learner`, times on the shared monotonic clock) and writes them as
JSON.

    ip netns exec NS python -m scripts.netns_learner URL TOKEN LESSON SECONDS OUT.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from scripts.room_probe import Learner


async def record(url: str, token: str, lesson: str, seconds: float) -> dict:
    learner = Learner()
    t0 = time.monotonic()
    await learner.join(SimpleNamespace(url=url), lesson, access_token=token)
    try:
        await learner.wait_tracks(timeout=60)
        first_frame = learner.video_t[0] - t0
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    finally:
        await learner.leave()
    return {"joined_at": t0, "first_frame_s": first_frame, "sizes": sorted(learner.sizes),
            "video_t": learner.video_t, "mouth": learner.mouth,
            "audio_t": learner.audio_t, "audio_rms": learner.audio_rms}


if __name__ == "__main__":
    url, token, lesson, seconds, out = sys.argv[1:6]
    Path(out).write_text(json.dumps(asyncio.run(record(url, token, lesson, float(seconds)))))
