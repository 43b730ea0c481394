"""Per-lesson avatars in real rooms: a backend registers a photo through the router's API, and
one worker serves two lessons at once, one with that photo's avatar and one with the default
tutor; a third lesson whose avatar's files were tampered with in the router's storage gets the
default tutor, with an ERROR line naming the reason. LiveKit, Redis, the router (with its real
registration jobs) and the worker are real; the learner is the Python SDK."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from livekit import rtc
from PIL import Image

from avatar_pipeline.avatar import AvatarRegistry, default_cache_dir, load_asset
from config.fleet import avatar_identity
from scripts.failover import join
from scripts.room_probe import resubscribe_dropped
from scripts.servers import DEV_API_KEY, AvatarWorkerProcess, RouterProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
API = {"X-API-Key": DEV_API_KEY}


def _register(router: RouterProcess, img: np.ndarray, name: str) -> dict:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    url = f"http://{router.address}/v1/avatars"
    r = httpx.post(url, headers=API, data={"name": name},
                   files={"file": (f"{name}.jpg", buf.getvalue(), "image/jpeg")}, timeout=10)
    assert r.status_code in (200, 202), r.text
    deadline = time.monotonic() + 90
    while (got := httpx.get(f"{url}/{r.json()['id']}", headers=API).json())["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.25)
    assert got["status"] == "ready", got
    return got


async def _frame(lk, lesson: str, token: str) -> np.ndarray:
    """A video frame of the lesson's avatar as a learner receives it (RGB, 512 px, after 1 s).
    WebRTC's encoder sends fewer pixels while the publisher's CPU is overused (three sessions
    on a busy 2-core box): after 8 s without a full-size frame the one at hand is taken,
    scaled to 512 px (a 256 px round trip moves the default avatar's pose by 1.8 levels; the
    avatars differ from each other by tens)."""
    room = rtc.Room()
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    widths: set[int] = set()  # what arrived, for the message if no frame is taken

    async def read(track) -> None:
        t0, frame = time.monotonic(), None
        async for ev in rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA):
            frame = ev.frame
            widths.add(frame.width)
            waited = time.monotonic() - t0
            if (waited > 1.0 and frame.width == 512) or waited > 8.0:
                break
        img = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 4)
        rgb = img[..., :3].copy()
        if frame.width != 512:
            print(f"{lesson}: the {frame.width} px layer, scaled to 512 px")
            size = (512, round(frame.height * 512 / frame.width))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        got.set_result(rgb)

    tasks = []

    @room.on("track_subscribed")
    def _on(track, _pub, participant) -> None:
        if participant.identity == avatar_identity(lesson) and track.kind == \
                rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.create_task(read(track)))

    await room.connect(lk.url, token)
    try:
        # a video publication still unsubscribed after 3 s is asked for again, as a client does
        start, retried = time.monotonic(), set()
        while not got.done() and time.monotonic() - start < 30:
            await asyncio.sleep(0.1)
            if not tasks and time.monotonic() - start > 3.0:
                await resubscribe_dropped(room, avatar_identity(lesson), retried,
                                          lambda pub: pub.kind == rtc.TrackKind.KIND_VIDEO)
        try:
            return await asyncio.wait_for(got, max(1.0, 30 - (time.monotonic() - start)))
        except TimeoutError:
            raise AssertionError(f"{lesson}: no frame taken in 30 s; video subscribed: "
                                 f"{bool(tasks)}, frame widths seen: {sorted(widths)}") from None
    finally:
        await room.disconnect()


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference (VP8 blurs a little, idle motion moves the head a few
    pixels: the same avatar differs by a few levels, another by tens)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


async def test_two_lessons_in_one_worker_show_their_own_avatars(livekit_server, redis_url,
                                                                tmp_path):
    from skimage import data

    lk = livekit_server
    face = data.astronaut()
    env = {"FLEET_AVATAR_CACHE": str(tmp_path / "cache"),
           "FLEET_AVATAR_SEED": str(default_cache_dir())}  # the default tutor, drawn already
    AvatarRegistry().default()
    with RouterProcess(lk, redis_url) as router, \
            AvatarWorkerProcess(lk, redis_url, "w-faces", capacity=4, extra_env=env,
                                router_url=f"http://{router.address}") as worker:
        photo = await asyncio.to_thread(_register, router, face, "collins")
        mirrored = await asyncio.to_thread(_register, router, face[:, ::-1].copy(), "mirrored")
        storage = router.workdir / "avatars" / "assets"
        assets = sorted(p.name for p in storage.iterdir() if not p.name.startswith("."))
        assert len(assets) == 2
        # the mirrored avatar's files are damaged in the router's storage after registration
        mirrored_asset = next(a for a in assets if
                              load_asset(storage / a).name == "mirrored")
        photo_asset = load_asset(storage / next(a for a in assets if a != mirrored_asset))
        sprite = storage / mirrored_asset / "mouths" / "10_aa.png"
        sprite.write_bytes(sprite.read_bytes()[:-8] + b"tampered")

        a = await asyncio.to_thread(join, router, "face-a", avatar_id=photo["id"])
        b = await asyncio.to_thread(join, router, "face-b")
        c = await asyncio.to_thread(join, router, "face-c", avatar_id=mirrored["id"])
        assert a["worker_id"] == b["worker_id"] == c["worker_id"] == "w-faces"
        frames = await asyncio.gather(*(_frame(lk, lesson, j["token"]) for lesson, j in
                                        (("face-a", a), ("face-b", b), ("face-c", c))))
        default = AvatarRegistry().default()
        want = {"photo": photo_asset.poses[0], "default": default.poses[0]}
        for lesson, frame, expect in zip(("face-a", "face-b", "face-c"), frames,
                                         ("photo", "default", "default"), strict=True):
            d = {k: _diff(frame, v) for k, v in want.items()}
            print(lesson, {k: round(v, 1) for k, v in d.items()})
            other = "default" if expect == "photo" else "photo"
            assert d[expect] < 15 < d[other], (lesson, d)
            Image.fromarray(frame).save(tmp_path / f"{lesson}.png")

        lines = worker.log_lines()
        fallback = [ln for ln in lines if ln.get("event") == "avatar.fallback_to_default"]
        assert [(ln["lesson_id"], ln["reason"], ln["level"]) for ln in fallback] == [
            ("face-c", "invalid", "error")], fallback
        loaded = [ln for ln in lines if ln.get("event") == "avatar.for_lesson"]
        assert [(ln["lesson_id"], ln["result"]) for ln in loaded] == [("face-a", "fetched")]
        # the worker's disk cache holds the verified asset only
        cached = Path(env["FLEET_AVATAR_CACHE"]) / "lessons"
        assert sorted(p.name for p in cached.iterdir()) == [photo_asset.id]
