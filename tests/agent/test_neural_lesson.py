"""The neural renderer in real rooms: a backend registers one photo twice, with the sprite and
the neural renderer; a worker given a Wav2Lip-class model (our generated same-signature model,
random weights: it stands in for users' weights, so the mouth it draws is not a real mouth) serves
both lessons at once. The learner of the neural lesson sees the lower face the model paints over
the photo, the other the photo's sprites; the neural lesson speaks /say text with its picture
changing with the speech. LiveKit, Redis, the router (real registration jobs) and the worker are
real; the learner is the Python SDK."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from livekit import rtc
from PIL import Image

from avatar_pipeline.avatar import AvatarRegistry, default_cache_dir, load_asset
from avatar_pipeline.neural import NeuralRenderer
from avatar_pipeline.neural.audio import SILENT_WINDOW
from avatar_pipeline.neural.testmodel import make_test_model
from config.fleet import avatar_identity
from scripts.failover import join, say
from scripts.servers import DEV_API_KEY, AvatarWorkerProcess, RouterProcess

REPO = Path(__file__).resolve().parents[2]
API = {"X-API-Key": DEV_API_KEY}


def _register(router: RouterProcess, img: np.ndarray, name: str, renderer: str) -> dict:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    url = f"http://{router.address}/v1/avatars"
    r = httpx.post(url, headers=API, data={"name": name, "renderer": renderer},
                   files={"file": (f"{name}.jpg", buf.getvalue(), "image/jpeg")}, timeout=10)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 90
    while (got := httpx.get(f"{url}/{r.json()['id']}", headers=API).json())["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.25)
    assert got["status"] == "ready" and got["renderer"] == renderer, got
    return got


async def _frames(lk, lesson: str, token: str, seconds: float, start=None) -> list[np.ndarray]:
    """RGB frames of the lesson's avatar as its learner receives them, for ``seconds`` after
    the first second (``start`` is called then)."""
    room = rtc.Room()
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def read(track) -> None:
        t0, out, started = time.monotonic(), [], False
        async for ev in rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA):
            now = time.monotonic() - t0
            if now < 1.0 or ev.frame.width != 512:
                continue
            if not started and start is not None:
                started = True
                asyncio.get_running_loop().run_in_executor(None, start)
            img = np.frombuffer(ev.frame.data, np.uint8).reshape(512, 512, 4)
            out.append(img[..., :3].copy())
            if now > 1.0 + seconds:
                break
        done.set_result(out)

    tasks = []

    @room.on("track_subscribed")
    def _on(track, _pub, participant) -> None:
        if participant.identity == avatar_identity(lesson) and track.kind == \
                rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.create_task(read(track)))

    await room.connect(lk.url, token)
    try:
        return await asyncio.wait_for(done, 30 + seconds)
    finally:
        await room.disconnect()


def _lower_face(img: np.ndarray, box) -> np.ndarray:
    """The lower half of the face box, where the neural renderer paints (a margin inside it
    for the head's idle motion)."""
    return img[box.y + box.height // 2 + 8:box.y + box.height - 8,
               box.x + box.width // 4:box.x + 3 * box.width // 4].astype(np.int16)


def _mouth_open(img: np.ndarray, box) -> int:
    """Dark pixels where the stand-in model draws its mouth opening."""
    h, w = box.height, box.width
    region = img[box.y + int(0.55 * h):box.y + int(0.78 * h),
                 box.x + int(0.33 * w):box.x + int(0.67 * w)]
    return int((region.astype(np.float32).mean(-1) < 60).sum())


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.livekit
@pytest.mark.redis
async def test_a_neural_avatar_and_a_sprite_avatar_of_one_photo_in_one_worker(
        livekit_server, redis_url, tmp_path):
    from skimage import data

    lk = livekit_server
    model = tmp_path / "w2l.onnx"
    make_test_model(model, width=0.25)
    env = {"FLEET_AVATAR_CACHE": str(tmp_path / "cache"),
           "FLEET_AVATAR_SEED": str(default_cache_dir()),
           "AVATAR_WORKER__NEURAL_MODEL": str(model)}
    AvatarRegistry().default()
    face = data.astronaut()
    with RouterProcess(lk, redis_url) as router, \
            AvatarWorkerProcess(lk, redis_url, "w-neural", capacity=4, extra_env=env,
                                router_url=f"http://{router.address}") as worker:
        sprite = await asyncio.to_thread(_register, router, face, "collins", "sprite")
        neural = await asyncio.to_thread(_register, router, face, "collins", "neural")
        assert sprite["id"] != neural["id"], "the renderer is part of the avatar"
        storage = router.workdir / "avatars" / "assets"
        assets = {load_asset(p).renderer: load_asset(p) for p in storage.iterdir()
                  if not p.name.startswith(".")}
        assert sorted(assets) == ["neural", "sprite"]
        asset = assets["neural"]
        assert np.array_equal(asset.poses, assets["sprite"].poses)

        # what the model paints over the photo when the tutor is silent
        r = NeuralRenderer(model)
        r.add_avatar(asset)
        box = r.crops[asset.id].box
        painted = r.render(asset.poses[:1].copy(), SILENT_WINDOW[None], [asset.id])[0]

        a = await asyncio.to_thread(join, router, "neural-a", avatar_id=neural["id"])
        b = await asyncio.to_thread(join, router, "sprite-b", avatar_id=sprite["id"])
        assert a["worker_id"] == b["worker_id"] == "w-neural"
        texts = "Bob put the map on a big blue boat, and we read it together."
        fa, fb = await asyncio.gather(
            _frames(lk, "neural-a", a["token"], 4.0,
                    start=lambda: say(router, "neural-a", texts)),
            _frames(lk, "sprite-b", b["token"], 1.0))
        Image.fromarray(fa[0]).save(tmp_path / "neural.png")
        Image.fromarray(fb[0]).save(tmp_path / "sprite.png")

        photo = asset.poses[0]
        # outside the face box both lessons show the photo
        far = (slice(0, box.y - 8), slice(None))
        assert _diff(fa[0][far], photo[far]) < 15 and _diff(fb[0][far], photo[far]) < 15
        # the neural lesson's lower face is what the model paints over the photo, the sprite
        # lesson's is not
        d = {"neural": _diff(_lower_face(fa[0], box), _lower_face(painted, box)),
             "sprite": _diff(_lower_face(fb[0], box), _lower_face(painted, box))}
        print("lower face against the painted one", d)
        assert d["neural"] < 8 and d["sprite"] > 2 * d["neural"] + 4, d

        # while it speaks the model hears the speech: the stand-in opens its mouth with it
        shut = _mouth_open(painted, box)
        opening = [_mouth_open(f, box) - shut for f in fa]
        print("mouth opening over the utterance (px)", np.percentile(opening, [10, 50, 90]))
        assert np.percentile(opening, 90) > 300 and min(opening) < 100, opening

        lines = worker.log_lines()
        opened = {ln["session_id"]: ln["renderer"] for ln in lines
                  if ln.get("event") == "engine.session_opened"}
        assert sorted(opened.values()) == ["neural", "sprite"], opened
        assert not [ln for ln in lines if ln.get("level") == "error"]


def test_a_model_with_another_signature_stops_the_worker_at_start(tmp_path):
    """A file that is not a Wav2Lip-class generator is refused when the worker starts, naming
    the setting and what differs, rather than failing the first neural lesson."""
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"weights? no")
    env = {"AVATAR_WORKER__NEURAL_MODEL": str(bad), "AVATAR_LIVEKIT__URL": "ws://127.0.0.1:9",
           "AVATAR_REDIS_URL": "redis://127.0.0.1:9/0"}
    r = subprocess.run([sys.executable, "-m", "agent", "start"], cwd=REPO, timeout=120,
                       env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "AVATAR_WORKER__NEURAL_MODEL: not-a-model.onnx: not a loadable ONNX model" in r.stderr, \
        r.stderr[-2000:]
