"""The on-disk avatar asset format (version 1) and its validating loader.

An asset is a directory::

    avatar.json            metadata + the sha256 of every file below
    poses/pose_000.png     idle-motion base frames, RGB, width x height (at least one)
    mouths/00_sil.png ...  one RGBA mouth sprite per viseme, in VISEMES order, all one size,
                           pasted at ``mouth.x, mouth.y`` (+ the pose's head offset)
    mouths/mid_00_01.png ...  optional: the mouth half way between two visemes, for every pair
                           (:data:`MID_PAIRS`), so a frame between two shapes shows one mouth
                           drawn in between instead of two mouths cross-faded
    blinks/0.png ...       RGBA eye sprites, from half-closed to closed, pasted at ``eyes.x, eyes.y``

``avatar.json`` (all keys required unless noted)::

    {"format": "avatar-fleet/avatar", "version": 1, "name": "...",
     "width": 512, "height": 512, "fps_hint": 25,
     "source": {"kind": "drawn" | "photo", ...},
     "idle": {"period_s": 8.0, "head_offsets": [[dx, dy], ...]},   # one per pose
     "mouth": {"x": 176, "y": 290, "width": 160, "height": 104},
     "eyes":  {"x": 180, "y": 220, "width": 152, "height": 48},
     "blink": {"mean_interval_s": 4.0, "duration_s": 0.16},
     "renderer": "neural",                                          # optional (default sprite)
     "files": {"poses/pose_000.png": "<sha256>", ...}}

``renderer`` says how lessons draw the mouth: ``sprite`` (the 15 mouths and their in-betweens,
the default, not written) or ``neural`` (the worker's Wav2Lip-class model repaints the lower face;
a worker without one falls back to the sprites, which every asset has).

The asset's id is the sha256 of its canonical ``avatar.json`` (which names every file's hash),
so identical content gets the same id wherever it is built. The loader refuses a broken asset
with :class:`AvatarError` whose message names the reason.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar_pipeline.viseme_set import NUM_VISEMES, VISEMES
from config.avatars import RENDERERS
from config.logs import get_logger

log = get_logger(__name__)

FORMAT_NAME = "avatar-fleet/avatar"
FORMAT_VERSION = 1
META_FILE = "avatar.json"
MAX_SIDE = 2048
MAX_POSES = 128
# the pairs of visemes an asset's in-between mouths are drawn for, in file order
MID_PAIRS: tuple[tuple[int, int], ...] = tuple(itertools.combinations(range(NUM_VISEMES), 2))


class AvatarError(ValueError):
    """An avatar asset (or a photo offered for one) is refused; the message says why."""


@dataclass
class Box:
    x: int
    y: int
    width: int
    height: int

    def to_json(self) -> dict:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass
class AvatarAsset:
    """An avatar in memory. Arrays are uint8 and C-contiguous.

    poses:   (P, H, W, 3) RGB idle-motion base frames
    head_offsets: (P, 2) float32 (dx, dy) of the head in each pose, relative to the sprites' boxes
    mouths:  (15, h, w, 4) RGBA, VISEMES order, placed at ``mouth_box``
    blinks:  (B, h, w, 4) RGBA, half-closed ... closed, placed at ``eyes_box``
    """

    name: str
    poses: np.ndarray
    head_offsets: np.ndarray
    mouths: np.ndarray
    mouth_box: Box
    blinks: np.ndarray
    eyes_box: Box
    fps_hint: int = 25
    idle_period_s: float = 8.0
    blink_mean_interval_s: float = 4.0
    blink_duration_s: float = 0.16
    source: dict = field(default_factory=dict)
    id: str = ""
    mids: np.ndarray | None = None  # (len(MID_PAIRS), h, w, 4) in-between mouths, or none
    renderer: str = "sprite"  # RENDERERS: how lessons draw the mouth

    @property
    def width(self) -> int:
        return int(self.poses.shape[2])

    @property
    def height(self) -> int:
        return int(self.poses.shape[1])

    def validate(self) -> None:
        """Raise AvatarError naming the first thing wrong with this asset."""
        p = self.poses
        if p.ndim != 4 or p.shape[3] != 3 or p.dtype != np.uint8:
            raise AvatarError(f"poses must be (P, H, W, 3) uint8, got {p.shape} {p.dtype}")
        if not (1 <= p.shape[0] <= MAX_POSES):
            raise AvatarError(f"need 1..{MAX_POSES} poses, got {p.shape[0]}")
        h, w = p.shape[1:3]
        if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE) or w % 2 or h % 2:
            raise AvatarError(f"frame size {w}x{h} not allowed (even, 16..{MAX_SIDE})")
        if self.head_offsets.shape != (p.shape[0], 2):
            raise AvatarError(
                f"idle.head_offsets has {len(self.head_offsets)} entries for {p.shape[0]} poses")
        m = self.mouths
        if m.ndim != 4 or m.shape[0] != NUM_VISEMES or m.shape[3] != 4 or m.dtype != np.uint8:
            raise AvatarError(
                f"mouths must be ({NUM_VISEMES}, h, w, 4) uint8 RGBA, got {m.shape} {m.dtype}")
        if self.mids is not None and self.mids.shape != (len(MID_PAIRS), *m.shape[1:]):
            raise AvatarError(f"in-between mouths must be ({len(MID_PAIRS)}, "
                              f"{m.shape[1]}, {m.shape[2]}, 4), got {self.mids.shape}")
        b = self.blinks
        if b.ndim != 4 or b.shape[0] < 1 or b.shape[3] != 4 or b.dtype != np.uint8:
            raise AvatarError(f"blinks must be (B>=1, h, w, 4) uint8 RGBA, got {b.shape}")
        # +4: compositors round offsets and pad sprites to even-aligned windows
        max_off = np.ceil(np.abs(self.head_offsets).max(initial=0.0)) + 4
        for name, box, arr in (("mouth", self.mouth_box, m), ("eyes", self.eyes_box, b)):
            if (box.height, box.width) != arr.shape[1:3]:
                raise AvatarError(
                    f"{name} box {box.width}x{box.height} does not match its sprites "
                    f"{arr.shape[2]}x{arr.shape[1]}")
            if (box.x - max_off < 0 or box.y - max_off < 0
                    or box.x + box.width + max_off > w or box.y + box.height + max_off > h):
                raise AvatarError(
                    f"{name} box {box.to_json()} (with head motion ±{int(max_off)} px) "
                    f"falls outside the {w}x{h} frame")
        if self.renderer not in RENDERERS:
            raise AvatarError(f"renderer {self.renderer!r} is not one of {', '.join(RENDERERS)}")
        if not 5 <= self.fps_hint <= 120:
            raise AvatarError(f"fps_hint {self.fps_hint} out of range 5..120")
        if not 0.5 <= self.idle_period_s <= 600:
            raise AvatarError(f"idle.period_s {self.idle_period_s} out of range")


# --------------------------------------------------------------------------- disk I/O


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    mode = {3: "RGB", 4: "RGBA"}[arr.shape[2]]
    buf = io.BytesIO()
    # compress_level 6 and no timestamps: the same pixels always give the same bytes.
    Image.fromarray(arr, mode).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta_dict(asset: AvatarAsset, files: dict[str, str]) -> dict:
    # "renderer" only when not the default: sprite assets keep the ids they always had
    extra = {} if asset.renderer == "sprite" else {"renderer": asset.renderer}
    return extra | {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": asset.name,
        "width": asset.width,
        "height": asset.height,
        "fps_hint": asset.fps_hint,
        "source": asset.source,
        "idle": {
            "period_s": asset.idle_period_s,
            "head_offsets": [[round(float(a), 3), round(float(b), 3)]
                             for a, b in asset.head_offsets],
        },
        "mouth": asset.mouth_box.to_json(),
        "eyes": asset.eyes_box.to_json(),
        "blink": {"mean_interval_s": asset.blink_mean_interval_s,
                  "duration_s": asset.blink_duration_s},
        "visemes": list(VISEMES),
        "files": files,
    }


def _canonical(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def asset_files(asset: AvatarAsset) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i, pose in enumerate(asset.poses):
        out[f"poses/pose_{i:03d}.png"] = _png_bytes(pose)
    for i, v in enumerate(VISEMES):
        out[f"mouths/{i:02d}_{v}.png"] = _png_bytes(asset.mouths[i])
    if asset.mids is not None:
        for k, (i, j) in enumerate(MID_PAIRS):
            out[_mid_file(i, j)] = _png_bytes(asset.mids[k])
    for i, b in enumerate(asset.blinks):
        out[f"blinks/{i}.png"] = _png_bytes(b)
    return out


def _mid_file(i: int, j: int) -> str:
    return f"mouths/mid_{i:02d}_{j:02d}.png"


def asset_id(asset: AvatarAsset) -> str:
    """The content id ``save_asset`` would give (without writing anything)."""
    files = asset_files(asset)
    return _sha(_canonical(_meta_dict(asset, {k: _sha(v) for k, v in files.items()})))[:24]


def save_asset(asset: AvatarAsset, directory: str | os.PathLike) -> str:
    """Write ``asset`` into ``directory`` (created; replaced atomically). Returns its id."""
    asset.validate()
    files = asset_files(asset)
    meta = _meta_dict(asset, {k: _sha(v) for k, v in files.items()})
    asset_id = _sha(_canonical(meta))[:24]
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    asset.id = asset_id
    log.info("avatar.saved", avatar_id=asset_id, path=str(directory), name=asset.name)
    return asset_id


def _read_png(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise AvatarError(f"{path.name}: not a PNG file")
            if im.mode != mode:
                raise AvatarError(f"{path.name}: mode {im.mode}, expected {mode}")
            if im.width > MAX_SIDE or im.height > MAX_SIDE:
                raise AvatarError(f"{path.name}: {im.width}x{im.height} larger than {MAX_SIDE}")
            return np.ascontiguousarray(np.asarray(im.convert(mode)))
    except AvatarError:
        raise
    except Exception as exc:  # PIL raises many kinds for a damaged file
        raise AvatarError(f"{path.name}: unreadable image ({exc})") from None


def _box(meta: dict, key: str) -> Box:
    b = meta.get(key)
    try:
        return Box(int(b["x"]), int(b["y"]), int(b["width"]), int(b["height"]))
    except (TypeError, KeyError, ValueError):
        raise AvatarError(f"avatar.json: '{key}' must be {{x, y, width, height}}") from None


def load_asset(directory: str | os.PathLike) -> AvatarAsset:
    """Load and validate an asset directory; AvatarError names what is wrong."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise AvatarError(f"{directory}: no {META_FILE} (not an avatar asset)")
    raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AvatarError(f"{META_FILE}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise AvatarError(f"{META_FILE}: 'format' is not {FORMAT_NAME!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise AvatarError(
            f"{META_FILE}: version {meta.get('version')!r} not supported (this build reads "
            f"version {FORMAT_VERSION})")
    if meta.get("visemes") != list(VISEMES):
        raise AvatarError(f"{META_FILE}: 'visemes' must be the canonical 15, in order")
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise AvatarError(f"{META_FILE}: 'files' is missing")
    for rel, digest in files.items():
        p = directory / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise AvatarError(f"{META_FILE}: file path {rel!r} leaves the asset directory")
        if not p.is_file():
            raise AvatarError(f"missing file {rel}")
        if _sha(p.read_bytes()) != digest:
            raise AvatarError(f"{rel}: content does not match its sha256 in {META_FILE}")
    pose_files = sorted(k for k in files if k.startswith("poses/"))
    mouth_files = [f"mouths/{i:02d}_{v}.png" for i, v in enumerate(VISEMES)]
    blink_files = sorted(k for k in files if k.startswith("blinks/"))
    for rel in mouth_files:
        if rel not in files:
            raise AvatarError(f"missing mouth sprite {rel}")
    mid_files = [_mid_file(i, j) for i, j in MID_PAIRS]
    present = [rel in files for rel in mid_files]
    if any(present) and not all(present):
        raise AvatarError(f"in-between mouths: {sum(present)} of {len(mid_files)} present")
    mid_files = mid_files if all(present) else []
    if not pose_files:
        raise AvatarError("no pose frames (poses/*.png)")
    if not blink_files:
        raise AvatarError("no blink sprites (blinks/*.png)")

    def stack(rels: list[str], mode: str) -> np.ndarray:
        arrs = [_read_png(directory / r, mode) for r in rels]
        if len({a.shape for a in arrs}) != 1:
            raise AvatarError(f"{Path(rels[0]).parent}/: images differ in size")
        return np.ascontiguousarray(np.stack(arrs))

    poses = stack(pose_files, "RGB")
    if (poses.shape[2], poses.shape[1]) != (meta.get("width"), meta.get("height")):
        raise AvatarError(
            f"pose frames are {poses.shape[2]}x{poses.shape[1]} but avatar.json says "
            f"{meta.get('width')}x{meta.get('height')}")
    idle = meta.get("idle") or {}
    blink = meta.get("blink") or {}
    try:
        offsets = np.asarray(idle.get("head_offsets", []), dtype=np.float32).reshape(-1, 2)
        asset = AvatarAsset(
            name=str(meta.get("name", directory.name)),
            poses=poses,
            head_offsets=offsets,
            mouths=stack(mouth_files, "RGBA"),
            mids=stack(mid_files, "RGBA") if mid_files else None,
            mouth_box=_box(meta, "mouth"),
            blinks=stack(blink_files, "RGBA"),
            eyes_box=_box(meta, "eyes"),
            fps_hint=int(meta.get("fps_hint", 25)),
            idle_period_s=float(idle.get("period_s", 8.0)),
            blink_mean_interval_s=float(blink.get("mean_interval_s", 4.0)),
            blink_duration_s=float(blink.get("duration_s", 0.16)),
            source=dict(meta.get("source") or {}),
            renderer=str(meta.get("renderer", "sprite")),
        )
    except (TypeError, ValueError) as exc:
        raise AvatarError(f"{META_FILE}: bad value ({exc})") from None
    asset.validate()
    asset.id = _sha(_canonical(meta))[:24]
    return asset
