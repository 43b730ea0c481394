"""The avatar API in-process (ASGI, lifespan run) against real Redis and LiveKit, with real
registration jobs (``python -m avatar_pipeline.avatar.job`` subprocesses) on a public-domain
portrait (``skimage.data.astronaut``)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from config.fleet import DispatchMetadata
from router.auth import DEV_API_KEY, DEV_OPS_KEY, DEV_WORKER_KEY, hash_key
from tests.router.conftest import API, OPS, make_settings, running_app

pytestmark = [pytest.mark.redis, pytest.mark.livekit]
OTHER_KEY = "another-backend-key"
OTHER = {"X-API-Key": OTHER_KEY}
WORKER = {"X-API-Key": DEV_WORKER_KEY}
BODY = {"user_id": "learner-1", "display_name": "Ada"}


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def portrait() -> bytes:
    from skimage import data

    return _jpeg(data.astronaut())


@pytest.fixture
async def app_client(redis_url, regions_file, tmp_path):
    settings = make_settings(
        redis_url, regions_file, avatar_dir=tmp_path / "avatars",
        api_key_sha256=[hash_key(DEV_API_KEY), hash_key(OTHER_KEY)],
        ops_key_sha256=[hash_key(DEV_OPS_KEY)], worker_key_sha256=[hash_key(DEV_WORKER_KEY)])
    async with running_app(settings) as c:
        yield c


async def _until_settled(client, avatar_id: str, headers=API, timeout: float = 90) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await client.get(f"/v1/avatars/{avatar_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] != "pending":
            return r.json()
        assert asyncio.get_running_loop().time() < deadline, "registration never finished"
        await asyncio.sleep(0.25)


async def test_register_a_photo_use_it_in_a_join_and_delete_it(app_client, workers, portrait):
    c = app_client
    await workers("w1", capacity=4)
    r = await c.post("/v1/avatars", headers=API, data={"name": "Ms Collins"},
                     files={"file": ("astronaut.jpg", portrait, "image/jpeg")})
    assert r.status_code == 202, r.text
    pending = r.json()
    avatar_id = pending["id"]
    assert avatar_id == hashlib.sha256(portrait).hexdigest()[:24]
    assert pending["status"] == "pending" and pending["name"] == "Ms Collins"
    # a join naming it before it is ready is refused with a retry hint, not sent a default
    r = await c.post("/v1/lessons/early/join", json={**BODY, "avatar_id": avatar_id},
                     headers=API)
    assert r.status_code == 409 and r.json()["error"] == "avatar_not_ready"
    assert r.headers["Retry-After"]

    ready = await _until_settled(c, avatar_id)
    assert ready["status"] == "ready", ready
    assert (ready["width"], ready["height"]) == (512, 512)
    png = await c.get(ready["preview_url"], headers=API)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    sheet = Image.open(io.BytesIO(png.content))
    assert sheet.width > sheet.height > 200  # 5 x 3 labelled mouths
    assert [a["id"] for a in (await c.get("/v1/avatars", headers=API)).json()["avatars"]] == [
        avatar_id]
    # the same photo again: the avatar it already made, no second job
    again = await c.post("/v1/avatars", headers=API,
                         files={"file": ("copy.jpg", portrait, "image/jpeg")})
    assert again.status_code == 200 and again.json()["status"] == "ready"

    # another backend sees none of it, and cannot use it in a join
    assert (await c.get("/v1/avatars", headers=OTHER)).json()["avatars"] == []
    assert (await c.get(f"/v1/avatars/{avatar_id}", headers=OTHER)).status_code == 404
    r = await c.post("/v1/lessons/theirs/join", json={**BODY, "avatar_id": avatar_id},
                     headers=OTHER)
    assert r.status_code == 404 and r.json()["error"] == "unknown_avatar"

    # the join's dispatch carries the asset, which workers (only) can fetch and verify
    r = await c.post("/v1/lessons/with-face/join", json={**BODY, "avatar_id": avatar_id},
                     headers=API)
    assert r.status_code == 200, r.text
    lesson = await c.app.state.router.store.lesson("with-face")
    asset_id = lesson[1]["avatar"]
    meta_raw = await c.get(f"/v1/assets/{asset_id}/avatar.json", headers=WORKER)
    assert meta_raw.status_code == 200
    meta = json.loads(meta_raw.content)
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest()[:24] == asset_id
    mouth = await c.get(f"/v1/assets/{asset_id}/mouths/10_aa.png", headers=WORKER)
    assert hashlib.sha256(mouth.content).hexdigest() == meta["files"]["mouths/10_aa.png"]
    assert (await c.get(f"/v1/assets/{asset_id}/avatar.json", headers=API)).status_code == 403
    for bad in ("secret.txt", "poses/..%2F..%2Frecords.png", "%2e%2e/avatar.json"):
        assert (await c.get(f"/v1/assets/{asset_id}/{bad}", headers=WORKER)).status_code == 404
    dispatches = await c.app.state.router.lk.api("local").agent_dispatch.list_dispatch(
        "lesson-with-face")
    metas = [DispatchMetadata.from_json(d.metadata) for d in dispatches if d.agent_name]
    assert [m.avatar for m in metas] == [asset_id]

    # deleted: gone for its backend, its files gone with the last avatar naming them
    r = await c.delete(f"/v1/avatars/{avatar_id}", headers=API)
    assert r.json() == {"id": avatar_id, "deleted": True}
    assert (await c.get(f"/v1/avatars/{avatar_id}", headers=API)).status_code == 404
    assert (await c.get(f"/v1/assets/{asset_id}/avatar.json", headers=WORKER)).status_code == 404
    assert (await c.delete(f"/v1/avatars/{avatar_id}", headers=API)).json()["deleted"] is False


async def test_bad_uploads_are_refused_with_a_reason(app_client, portrait):
    c = app_client
    # no face: registered as refused, with the job's reason; a join cannot use it
    blank = _jpeg(np.full((400, 400, 3), 200, np.uint8))
    r = await c.post("/v1/avatars", headers=API, files={"file": ("wall.jpg", blank, "image/jpeg")})
    assert r.status_code == 202
    refused = await _until_settled(c, r.json()["id"])
    assert refused["status"] == "refused" and "face" in refused["reason"].lower(), refused
    assert refused["preview_url"] is None
    r = await c.post("/v1/lessons/faceless/join", json={**BODY, "avatar_id": refused["id"]},
                     headers=API)
    assert r.status_code == 422 and r.json()["error"] == "avatar_unusable"
    # not an image at all
    r = await c.post("/v1/avatars", headers=API,
                     files={"file": ("notes.jpg", b"hello, not a photo", "image/jpeg")})
    bad = await _until_settled(c, r.json()["id"])
    assert bad["status"] == "refused" and "not a readable image" in bad["reason"], bad
    # a decompression bomb: refused from its header, before any pixel is decoded
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG", optimize=True)
    r = await c.post("/v1/avatars", headers=API, files={"file": ("big.png", buf.getvalue(),
                                                                 "image/png")})
    bomb = await _until_settled(c, r.json()["id"])
    assert bomb["status"] == "refused" and "limit" in bomb["reason"], bomb
    # too large to take at all, empty, no file, a bad name, an id that is not one
    big = b"\xff" * (20 * 1024 * 1024 + 1)
    r = await c.post("/v1/avatars", headers=API, files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = await c.post("/v1/avatars", headers=API, files={"file": ("e.jpg", b"", "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"] == "empty_file"
    assert (await c.post("/v1/avatars", headers=API)).status_code == 422
    r = await c.post("/v1/avatars", headers=API, data={"name": "<script>"},
                     files={"file": ("a.jpg", portrait, "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"] == "bad_name"
    r = await c.post("/v1/avatars", headers=API, data={"renderer": "hologram"},
                     files={"file": ("a.jpg", portrait, "image/jpeg")})
    assert r.status_code == 422 and "renderer" in r.text and "neural" in r.text, r.text
    assert (await c.get("/v1/avatars/not-an-id", headers=API)).status_code == 422
    r = await c.post("/v1/lessons/x/join", json={**BODY, "avatar_id": "zz"}, headers=API)
    assert r.status_code == 422
    # keys: none, ops, worker
    assert (await c.get("/v1/avatars")).status_code == 401
    assert (await c.get("/v1/avatars", headers=OPS)).status_code == 403
    assert (await c.get("/v1/avatars", headers=WORKER)).status_code == 403


async def test_a_registration_whose_router_stopped_reads_failed_everywhere(app_client):
    """A record left pending by a router replica that stopped (no job runs it anywhere) is
    reported failed past the job timeout, by GET and by a join naming it alike."""
    c = app_client
    storage = c.app.state.avatar_storage
    owner = hash_key(DEV_API_KEY)[:32]
    stale = "2026-01-01T00:00:00+00:00"
    storage.put_record(owner, {"id": "a" * 24, "name": "lost", "status": "pending",
                               "reason": None, "asset_id": None, "width": None, "height": None,
                               "created_at": stale, "updated_at": stale})
    got = (await c.get(f"/v1/avatars/{'a' * 24}", headers=API)).json()
    assert got["status"] == "failed" and "upload it again" in got["reason"]
    r = await c.post("/v1/lessons/lost/join", json={**BODY, "avatar_id": "a" * 24}, headers=API)
    assert r.status_code == 422 and r.json()["detail"]["status"] == "failed", r.text
