"""What the router and the workers agree on about per-lesson avatars.

A backend registers a photo with the router (``POST /v1/avatars``); the router runs the
registration job (``python -m avatar_pipeline.avatar.job``) and stores the resulting asset,
content-addressed, in its avatar storage. The asset's id is the sha256 (24 hex digits) of its
canonical ``avatar.json``, which names the sha256 of every other file, so a worker that fetches
an asset by id can verify every byte it got. A join names the backend's avatar; the dispatch
carries the asset id (``DispatchMetadata.avatar``); the worker fetches the asset from the router
at :data:`ASSET_FILE_PATH` with its worker key and caches it.
"""

from __future__ import annotations

from typing import Literal, get_args

# an avatar (the backend's handle) and an asset (what workers fetch) are both 24 hex digits
AVATAR_ID_PATTERN = r"^[0-9a-f]{24}$"
# GET, worker key: one file of an asset ("avatar.json" first, then the files it names)
ASSET_FILE_PATH = "/v1/assets/{asset_id}/{path}"
ASSET_META_FILE = "avatar.json"
# an asset's file paths: avatar.json, preview.png, poses/pose_000.png, mouths/00_sil.png, ...
ASSET_PATH_PATTERN = r"^(avatar\.json|preview\.png|(poses|mouths|blinks)/[A-Za-z0-9_.-]{1,64}\.png)$"
# the photo (or short video) a backend uploads
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# How a lesson draws its avatar's mouth (the asset's "renderer"): sprite, the 15 mouths and their
# in-betweens; neural, the worker's Wav2Lip-class model (``worker.neural_model``) repaints the
# lower face, and a worker without one draws the sprites instead.
Renderer = Literal["sprite", "neural"]
RENDERERS: tuple[str, ...] = get_args(Renderer)
