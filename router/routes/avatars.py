"""Avatars: a backend registers a face photo (or a short video's first frame), follows its
registration, previews its 15 mouths, names it in joins and deletes it; workers fetch the assets
(``/v1/assets``, worker key). Each backend key sees only its own avatars (``deps.Owner``)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from config.avatars import (
    ASSET_PATH_PATTERN,
    AVATAR_ID_PATTERN,
    MAX_UPLOAD_BYTES,
    Renderer,
)
from config.logs import get_logger
from router.avatar_jobs import AvatarJobs, now_iso
from router.deps import ERRORS, ApiError, JobsDep, Owner, StorageDep, backend, worker
from router.schemas import AvatarDeleted, AvatarsResponse, AvatarView, ErrorBody

log = get_logger("router.avatars")
routes = APIRouter(prefix="/v1/avatars", tags=["avatars"], dependencies=[backend])
assets = APIRouter(prefix="/v1/assets", tags=["assets"], dependencies=[worker])

AvatarId = Annotated[str, PathParam(pattern=AVATAR_ID_PATTERN, description="24 hex digits")]
# the registration job tells a video from a photo by the file's suffix
_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".mp4", ".mov", ".webm", ".mkv", ".avi",
             ".m4v"}
_NAME = re.compile(r"^[^\x00-\x1f<>]{1,80}$")
_CHUNK = 1 << 20




def view(record: dict, jobs: AvatarJobs, owner: str) -> dict:
    """A record as the API shows it (``AvatarJobs.effective``), with its preview's URL."""
    rec = dict(jobs.effective(owner, record))
    rec["preview_url"] = (f"/v1/avatars/{rec['id']}/preview.png" if rec["status"] == "ready"
                          else None)
    return AvatarView.model_validate(rec).model_dump(mode="json")


def _spool(data: bytes, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix="avatar-upload-", suffix=suffix)
    with open(fd, "wb") as f:
        f.write(data)
    return tmp


async def _read_upload(file: UploadFile) -> bytes:
    data = bytearray()
    while chunk := await file.read(_CHUNK):
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "too_large",
                           f"uploads are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
    if not data:
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    return bytes(data)


@routes.post("", response_model=AvatarView, status_code=202,
             responses={**ERRORS, 200: {"model": AvatarView}, 413: {"model": ErrorBody}})
async def register(owner: Owner, storage: StorageDep, jobs: JobsDep,
                   file: Annotated[UploadFile, File(description=(
                       "a face photo (JPEG, PNG, WebP, GIF) or a short video (its first frame)"))],
                   name: Annotated[str | None, Form(max_length=80)] = None,
                   renderer: Annotated[Renderer, Form(description=(
                       "how lessons draw the mouth: sprite (15 mouths and their in-betweens) or "
                       "neural (the workers' Wav2Lip-class model repaints the lower face; "
                       "workers without one draw the sprites)"))] = "sprite") -> JSONResponse:
    """Register a photo as an avatar: 202 with the avatar ``pending`` while its mouths are
    made (seconds), then ``GET /v1/avatars/{id}`` says ``ready`` or ``refused`` with the
    reason. The id is the photo's content hash: uploading the same photo again answers 200
    with the avatar it already made. The same photo registered with the other renderer is
    another avatar (its id also hashes the renderer)."""
    if name is not None and not _NAME.match(name):
        raise ApiError(422, "bad_name", "name: 1-80 printable characters, no < >")
    data = await _read_upload(file)
    digest = hashlib.sha256(data)
    if renderer != "sprite":  # the sprite avatar of a photo keeps the id it always had
        digest.update(f"\0renderer={renderer}".encode())
    avatar_id = digest.hexdigest()[:24]
    old = await asyncio.to_thread(storage.get_record, owner, avatar_id)
    if old is not None and view(old, jobs, owner)["status"] in ("pending", "ready", "refused"):
        return JSONResponse(view(old, jobs, owner), 200)
    suffix = Path(file.filename or "").suffix.lower()
    suffix = suffix if suffix in _SUFFIXES else ".img"
    tmp = await asyncio.to_thread(_spool, data, suffix)
    stamp = now_iso()
    record = {"id": avatar_id, "name": name or Path(file.filename or "photo").stem[:80] or "photo",
              "status": "pending", "reason": None, "asset_id": None, "width": None,
              "height": None, "renderer": renderer, "created_at": stamp, "updated_at": stamp}
    await asyncio.to_thread(storage.put_record, owner, record)
    jobs.submit(owner, record, Path(tmp))
    log.info("avatar.submitted", avatar_id=avatar_id, owner=owner, bytes=len(data))
    return JSONResponse(view(record, jobs, owner), 202)


@routes.get("", response_model=AvatarsResponse, responses=ERRORS)
async def list_avatars(owner: Owner, storage: StorageDep, jobs: JobsDep) -> dict:
    """This backend's avatars, any status."""
    records = await asyncio.to_thread(storage.list_records, owner)
    return {"avatars": [view(r, jobs, owner) for r in records]}


@routes.get("/{avatar_id}", response_model=AvatarView,
            responses={**ERRORS, 404: {"model": ErrorBody}})
async def get_avatar(avatar_id: AvatarId, owner: Owner, storage: StorageDep,
                     jobs: JobsDep) -> dict:
    record = await asyncio.to_thread(storage.get_record, owner, avatar_id)
    if record is None:
        raise ApiError(404, "unknown_avatar", "no such avatar for this key")
    return view(record, jobs, owner)


@routes.get("/{avatar_id}/preview.png", response_class=Response,
            responses={**ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody},
                       200: {"content": {"image/png": {}}}})
async def preview(avatar_id: AvatarId, owner: Owner, storage: StorageDep) -> Response:
    """The avatar's 15 mouth shapes, as a learner would see them (PNG)."""
    record = await asyncio.to_thread(storage.get_record, owner, avatar_id)
    if record is None:
        raise ApiError(404, "unknown_avatar", "no such avatar for this key")
    if record["status"] != "ready":
        raise ApiError(409, "avatar_not_ready", f"the avatar is {record['status']}")
    png = await asyncio.to_thread(storage.read_asset_file, record["asset_id"], "preview.png")
    if png is None:
        raise ApiError(404, "preview_missing", "this avatar has no preview")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@routes.delete("/{avatar_id}", response_model=AvatarDeleted, responses=ERRORS)
async def delete_avatar(avatar_id: AvatarId, owner: Owner, storage: StorageDep) -> dict:
    """Forget the avatar (idempotent). Lessons already showing it keep it until they end; its
    files go once no backend's avatar uses them."""
    record = await asyncio.to_thread(storage.get_record, owner, avatar_id)
    deleted = await asyncio.to_thread(storage.delete_record, owner, avatar_id)
    asset_id = (record or {}).get("asset_id")
    if asset_id:
        rest = await asyncio.to_thread(storage.list_records)
        if not any(r.get("asset_id") == asset_id for r in rest):
            await asyncio.to_thread(storage.delete_asset, asset_id)
    log.info("avatar.deleted", avatar_id=avatar_id, owner=owner, deleted=deleted)
    return {"id": avatar_id, "deleted": deleted}


@assets.get("/{asset_id}/{path:path}", response_class=Response,
            responses={**ERRORS, 404: {"model": ErrorBody}})
async def asset_file(asset_id: AvatarId, path: str, storage: StorageDep) -> Response:
    """One file of an asset, for workers (their key): ``avatar.json`` names the others and
    their sha256, and its own sha256 is the asset id (config/avatars.py)."""
    if not re.match(ASSET_PATH_PATTERN, path):
        raise ApiError(404, "not_found", "no such asset file")
    data = await asyncio.to_thread(storage.read_asset_file, asset_id, path)
    if data is None:
        raise ApiError(404, "not_found", "no such asset file")
    media = "application/json" if path.endswith(".json") else "image/png"
    return Response(data, media_type=media,
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})
