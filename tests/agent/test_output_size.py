"""A deployment's output size and rate work end to end: a worker set to 854x480 at 30 fps
(``AVATAR_VIDEO__*``) streams exactly that to a learner in a real room, with the tutor fitted in
the middle and its mouth moving with its speech; sizes it cannot make stop it at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest

from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.avatar.fit import fit_asset
from config.fleet import SayRequest
from scripts.room_probe import Learner, dispatch, mouth_crop
from scripts.servers import REPO, AvatarWorkerProcess
from tests.agent.test_avatar_session import backend_say

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
SIZE, FPS = (854, 480), 30


async def test_a_worker_streams_854x480_at_30_fps(livekit_server, redis_url):
    lk = livekit_server
    env = {"AVATAR_VIDEO__WIDTH": str(SIZE[0]), "AVATAR_VIDEO__HEIGHT": str(SIZE[1]),
           "AVATAR_VIDEO__FPS": str(FPS)}
    with AvatarWorkerProcess(lk, redis_url, "w-wide", capacity=2, extra_env=env):
        learner = Learner()
        await learner.join(lk, "wide")
        await dispatch(lk, redis_url, "w-wide", "wide", voice=None)
        deadline = time.monotonic() + 30
        while not learner.sizes:
            assert time.monotonic() < deadline, "no video"
            await asyncio.sleep(0.1)
        # libwebrtc's VP8 path sends widths in multiples of 4: 854 arrives as 852 (a pixel
        # off each side); the height and the picture are as composed
        (got,) = learner.sizes
        assert SIZE[0] - 2 <= got[0] <= SIZE[0] and got[1] == SIZE[1], learner.sizes
        # measure the mouth where the fitted tutor has it
        fitted = fit_asset(AvatarRegistry().default(), *SIZE)
        learner._size, learner._crop = got, mouth_crop(fitted)
        await learner.wait_tracks()
        await asyncio.sleep(2.0)
        t0, n0 = time.monotonic(), len(learner.video_t)
        await asyncio.sleep(3.0)
        fps = (len(learner.video_t) - n0) / (time.monotonic() - t0)
        assert learner.sizes == {got}, learner.sizes
        assert fps > FPS * 0.85, f"{fps:.1f} frames/s received"
        quiet = float(np.max(learner.mouth[-40:]))

        t_say = time.monotonic()
        await backend_say(lk, "wide", SayRequest(text="Open your books at page ten, please."))
        await asyncio.sleep(4.0)
        vt, mouth = np.array(learner.video_t), np.array(learner.mouth)
        spoken = mouth[vt > t_say]
        print(f"received {fps:.1f} frames/s at {got}; mouth openness quiet {quiet:.1f} %, "
              f"speaking up to {spoken.max():.1f} %")
        assert spoken.max() > max(quiet + 3, 1.5 * quiet), (quiet, spoken.max())
        await learner.leave(lk)


def test_a_size_no_avatar_fits_stops_the_worker_at_start():
    """4096x2160 passes the settings' bounds, but frames are at most 2048 on a side: the worker
    refuses to start with the reason instead of serving something else."""
    env = {"AVATAR_VIDEO__WIDTH": "4096", "AVATAR_VIDEO__HEIGHT": "2160",
           "AVATAR_LIVEKIT__URL": "ws://127.0.0.1:9", "AVATAR_REDIS_URL": "redis://127.0.0.1:9/0"}
    import os

    r = subprocess.run([sys.executable, "-m", "agent", "start"], cwd=REPO, timeout=120,
                       env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "does not fit 4096x2160" in r.stderr + r.stdout, (r.stderr + r.stdout)[-2000:]
