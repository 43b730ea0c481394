"""Photo avatars: one face photo (JPG/PNG/WebP, or the first frame of a GIF or video) ->
an avatar asset with 15 synthesised mouths, blink sprites and idle poses, cached on disk.

Detection runs once, here; composition never detects anything.

Landmarks come from OpenCV's Haar cascades (they ship inside opencv-python-headless < 5, so
there is nothing to download and no protobuf conflict): the frontal-face cascade finds faces,
the eye cascade finds both eyes (which also tells us the face is frontal and level), and the
mouth is located from the eye geometry and then refined by lip-colour segmentation (the a*
channel of CIELAB) inside the lower face: corners, lip line, and whether the photo's mouth is
already open (a smile with teeth), in which case it is closed first.

Mouth variants are made by warping, not by a model (:mod:`.photo_mouth`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_pipeline.avatar import face_mesh as fm
from avatar_pipeline.avatar.asset import MID_PAIRS, AvatarAsset, AvatarError, Box
from avatar_pipeline.avatar.face_mesh import Mesh
from avatar_pipeline.avatar.mouth_mesh import MeshWarp
from avatar_pipeline.avatar.photo_mouth import (
    PHOTO_MOUTHS,
    MouthGeometry,
    blend_mouths,
    smoothstep,
    synth_mouth,
)
from avatar_pipeline.viseme_set import VISEMES
from config.logs import get_logger

log = get_logger(__name__)

PHOTO_VERSION = 5  # 2: in-between mouths; 3: shaded interiors; 4: face-mesh landmarks;
# 5: mouths warped over the face mesh's triangles
OUT_SIZE = 512
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_FACE_PX = 80
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "MPO"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}
N_POSES = 24
IDLE_PERIOD_S = 8.0


# --------------------------------------------------------------------------- input


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 of a photo, or of the first frame of a GIF/video, within the limits."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise AvatarError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise AvatarError(f"{path.name}: file is {size / 1e6:.1f} MB, the limit is "
                          f"{MAX_FILE_BYTES / 1e6:.0f} MB")
    if size == 0:
        raise AvatarError(f"{path.name}: file is empty")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _first_video_frame(path)
    try:
        with Image.open(path) as im:
            if im.format not in IMAGE_FORMATS:
                raise AvatarError(f"{path.name}: format {im.format} not accepted "
                                  f"(JPEG, PNG, WebP, GIF, or a video)")
            w, h = im.size
            if w * h > MAX_PIXELS:  # checked before decoding: no decompression bombs
                raise AvatarError(f"{path.name}: {w}x{h} = {w * h / 1e6:.0f} MP, the limit is "
                                  f"{MAX_PIXELS / 1e6:.0f} MP")
            im.seek(0)
            im.load()
            from PIL import ImageOps

            upright = ImageOps.exif_transpose(im)  # phone photos are stored sideways + a tag
            return np.ascontiguousarray(np.asarray(upright.convert("RGB")))
    except AvatarError:
        raise
    except Image.DecompressionBombError as exc:
        raise AvatarError(f"{path.name}: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AvatarError(f"{path.name}: not a readable image ({exc})") from None


def _first_video_frame(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise AvatarError(f"{path.name}: has no video stream")
            cc = c.streams.video[0].codec_context
            if (cc.width or 0) * (cc.height or 0) > MAX_PIXELS:
                raise AvatarError(f"{path.name}: video frames of {cc.width}x{cc.height} are "
                                  "over the pixel limit")
            for frame in c.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except AvatarError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AvatarError(f"{path.name}: not a readable video ({exc})") from None
    raise AvatarError(f"{path.name}: no decodable video frame")


# --------------------------------------------------------------------------- detection


def _cascade(name: str):
    import cv2

    c = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, name))
    if c.empty():
        raise RuntimeError(f"OpenCV cascade {name} is missing from this OpenCV build")
    return c


@dataclass
class FaceLandmarks:
    """In the coordinates of the image they were found in."""

    face: tuple[int, int, int, int]  # x, y, w, h
    eyes: tuple[tuple[float, float, float], tuple[float, float, float]]  # (cx, cy, w) left, right


def detect_face(rgb: np.ndarray) -> FaceLandmarks:
    """Find exactly one usable, frontal, well-lit, sharp face; AvatarError names the reason."""
    import cv2

    h0, w0 = rgb.shape[:2]
    scale = min(1.0, 1024 / max(h0, w0))
    img = cv2.resize(rgb, (round(w0 * scale), round(h0 * scale)),
                     interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    gray = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    min_side = min(gray.shape)
    faces = _cascade("haarcascade_frontalface_alt2.xml").detectMultiScale(
        gray, scaleFactor=1.08, minNeighbors=5, minSize=(max(24, min_side // 12),) * 2)
    faces = [tuple(int(v) for v in f) for f in (faces if len(faces) else [])]
    if faces:
        biggest = max(f[2] for f in faces)
        faces = [f for f in faces if f[2] >= 0.5 * biggest]  # ignore tiny background detections
    if not faces:
        raise AvatarError("no face found: use a well-lit, frontal photo of one face")
    if len(faces) > 1:
        raise AvatarError(f"{len(faces)} faces found: the photo must show exactly one face")
    fx, fy, fw, fh = (v / scale for v in faces[0])
    if fw < MIN_FACE_PX:
        raise AvatarError(f"face too small: {fw:.0f} px wide, need at least {MIN_FACE_PX} px")
    # quality inside the face box
    x0, y0 = int(fx), int(fy)
    face_rgb = rgb[y0:y0 + int(fh), x0:x0 + int(fw)]
    fgray = cv2.cvtColor(face_rgb, cv2.COLOR_RGB2GRAY)
    mean = float(fgray.mean())
    if mean < 55:
        raise AvatarError(f"face too dark (mean brightness {mean:.0f}/255, need >= 55)")
    if mean > 235:
        raise AvatarError(f"face overexposed (mean brightness {mean:.0f}/255)")
    small = cv2.resize(fgray, (128, round(128 * fh / fw)), interpolation=cv2.INTER_AREA)
    sharp = float(cv2.Laplacian(small, cv2.CV_64F).var())
    if sharp < 25:
        raise AvatarError(f"face too blurred (sharpness {sharp:.0f}, need >= 25)")
    eyes = _find_eyes(fgray, fw, fh)
    if eyes is None:
        raise AvatarError("face not frontal enough: both eyes must be visible and level "
                          "(look straight at the camera, no sunglasses)")
    (lx, ly, lw), (rx, ry, rw) = eyes
    return FaceLandmarks(
        face=(int(fx), int(fy), int(fw), int(fh)),
        eyes=((lx + x0, ly + y0, lw), (rx + x0, ry + y0, rw)),
    )


def _find_eyes(fgray: np.ndarray, fw: float, fh: float):
    import cv2

    upper = cv2.equalizeHist(fgray[: int(fh * 0.6)])
    found = []
    for name in ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml"):
        e = _cascade(name).detectMultiScale(upper, 1.05, 4, minSize=(int(fw * 0.12),) * 2,
                                            maxSize=(int(fw * 0.4),) * 2)
        found = [(x + w / 2, y + h / 2, float(w)) for x, y, w, h in e] if len(e) else []
        left = [f for f in found if f[0] < fw * 0.5]
        right = [f for f in found if f[0] >= fw * 0.5]
        if left and right:
            break
    else:
        return None
    # the pair that is most level and most symmetric about the face centre
    best, best_cost = None, 1e9
    for le in left:
        for re in right:
            dx, dy = re[0] - le[0], re[1] - le[1]
            if dx < fw * 0.25:
                continue
            tilt = abs(math.degrees(math.atan2(dy, dx)))
            asym = abs((le[0] + re[0]) / 2 - fw / 2) / fw
            cost = tilt / 12 + asym / 0.12
            if tilt <= 12 and asym <= 0.12 and cost < best_cost:
                best, best_cost = (le, re), cost
    return best


# --------------------------------------------------------------------------- mouth geometry


def mouth_from_mesh(rgb: np.ndarray, mesh: Mesh, eyes) -> MouthGeometry | None:
    """The mouth from face-mesh points: the corners, both lips' outer and inner edges at the
    centre, the inner corners; the photo's teeth where the lips are apart. None when the points
    are far from where the eyes put the mouth (the mesh then fits something else)."""
    (lx, ly, _), (rx, ry, _) = eyes
    iod = math.hypot(rx - lx, ry - ly)
    left, right = mesh.xy(fm.LEFT_CORNER), mesh.xy(fm.RIGHT_CORNER)
    up_in, lo_in = mesh.xy(fm.UPPER_INNER), mesh.xy(fm.LOWER_INNER)
    cx, half_w = (left[0] + right[0]) / 2, (right[0] - left[0]) / 2
    line_y = (up_in[1] + lo_in[1]) / 2
    if half_w < 0.2 * iod or abs(cx - (lx + rx) / 2) > 0.2 * iod or not (
            0.7 * iod < line_y - (ly + ry) / 2 < 1.45 * iod):
        return None
    gap = float(lo_in[1] - up_in[1])
    gap = gap if gap > max(1.5, 0.04 * half_w) else 0.0
    corner_y = (left[1] + right[1]) / 2
    teeth_rgb, open_half_w = None, half_w
    if gap:
        open_half_w = float(mesh.xy(fm.INNER_RIGHT)[0] - mesh.xy(fm.INNER_LEFT)[0]) / 2
        hole = rgb[int(up_in[1]) + 1:int(lo_in[1]),
                   int(cx - 0.5 * open_half_w):int(cx + 0.5 * open_half_w)]
        px = hole.reshape(-1, 3).astype(np.float32)
        if len(px) > 20:
            lum = px.mean(1)
            teeth_rgb = tuple(float(v) for v in np.median(px[lum >= np.percentile(lum, 60)], 0))
    return MouthGeometry(
        cx=float(cx), line_y=float(line_y), half_w=float(half_w), gap=gap,
        lip_top=float(mesh.xy(fm.UPPER_OUTER)[1]), lip_bottom=float(mesh.xy(fm.LOWER_OUTER)[1]),
        iod=iod, from_segmentation=True,
        curv=float(np.clip((corner_y - line_y) / max(half_w, 1.0) ** 2, -0.02, 0.002)),
        open_half_w=float(min(open_half_w, half_w)), teeth_rgb=teeth_rgb,
        mesh=mesh.points[:, :2].copy())


def locate_mouth(rgb: np.ndarray, eyes) -> MouthGeometry:
    """Estimate the mouth from the eyes, then refine it by lip colour (a* of CIELAB)."""
    import cv2

    (lx, ly, _), (rx, ry, _) = eyes
    iod = math.hypot(rx - lx, ry - ly)
    ex, ey = (lx + rx) / 2, (ly + ry) / 2
    cx, line_y, half_w = ex, ey + 1.05 * iod, 0.42 * iod
    guess = MouthGeometry(cx, line_y, half_w, 0.0, line_y - 0.12 * iod, line_y + 0.16 * iod,
                          iod, False)
    x0, x1 = int(ex - 0.75 * iod), int(ex + 0.75 * iod)
    y0, y1 = int(ey + 0.7 * iod), int(ey + 1.45 * iod)
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 10 or y1 - y0 < 10:
        return guess
    lab = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB)
    a = cv2.GaussianBlur(lab[..., 1], (3, 3), 0)
    thr, mask = cv2.threshold(a, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    above = a > thr
    if not above.any() or above.all() or float(a[above].mean() - a[~above].mean()) < 6:
        return guess  # no lip contrast to speak of
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lbl, stats, cent = cv2.connectedComponentsWithStats(mask)
    best, best_score = None, 0.0
    for i in range(1, n):
        bx, by, bw, bh, area = stats[i]
        ccx = bx + bw / 2 + x0
        if bw < 0.45 * iod or bw > 1.4 * iod or bh > 0.7 * iod:
            continue
        score = area * math.exp(-((ccx - ex) / (0.25 * iod)) ** 2)
        if score > best_score:
            best, best_score = i, score
    if best is None:
        return guess
    bx, by, bw, bh, _ = stats[best]
    comp = lbl == best
    gray = lab[..., 0].astype(np.float32)
    # per column: the upper lip run, then (open mouth) teeth/cavity, then the lower lip run
    cols, tops, bots, lines = [], [], [], []
    for c in range(bx + max(1, bw // 10), bx + bw - max(1, bw // 10)):
        on = np.nonzero(comp[:, c])[0]
        if len(on) < 2:
            continue
        breaks = np.nonzero(np.diff(on) > 2)[0]
        cols.append(c)
        if len(breaks):
            t, b = on[breaks[0]] + 1, on[breaks[-1] + 1]
            tops.append(t)
            bots.append(b)
            lines.append((t + b) / 2)
        else:  # lips meet: the darkest row inside the lips
            seg = gray[on.min():on.max() + 1, c]
            r = on.min() + float(np.argmin(seg)) + 0.5
            tops.append(r)
            bots.append(r)
            lines.append(r)
    if len(cols) < 5:
        return guess
    cols_a = np.asarray(cols, np.float64) + x0
    ccx = x0 + bx + bw / 2
    gaps = np.asarray(bots, np.float64) - np.asarray(tops, np.float64)
    # fit the lip line as a parabola (a smile curves up at the corners)
    A = np.stack([np.ones_like(cols_a), (cols_a - ccx) ** 2], 1)
    coef, *_ = np.linalg.lstsq(A, np.asarray(lines, np.float64) + y0, rcond=None)
    central = np.abs(cols_a - ccx) < bw / 6
    open_frac = float((gaps[central] > 1).mean()) if central.any() else 0.0
    gap = float(np.median(gaps[central])) if open_frac > 0.6 else 0.0
    teeth_rgb = None
    if gap:
        crop = rgb[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
        hole = np.zeros(comp.shape, bool)
        for cc, t, b in zip(cols, tops, bots, strict=True):
            if b - t > 1:
                hole[int(t):int(b), cc] = True
        px = crop[hole.reshape(-1)]
        if len(px) > 20:
            lum = px.mean(1)
            bright = px[lum >= np.percentile(lum, 60)]
            teeth_rgb = tuple(float(v) for v in np.median(bright, 0))
    open_cols = cols_a[gaps > 1]
    open_hw = (float(np.abs(open_cols - ccx).max()) + 1) if gap and len(open_cols) else bw / 2
    geo = MouthGeometry(
        cx=ccx,
        line_y=float(coef[0]),
        half_w=bw / 2,
        gap=gap,
        lip_top=float(y0 + by),
        lip_bottom=float(y0 + by + bh),
        iod=iod,
        from_segmentation=True,
        curv=float(np.clip(coef[1], -0.02, 0.002)),
        open_half_w=min(open_hw, bw / 2),
        teeth_rgb=teeth_rgb,
    )
    # sanity: far from the geometric guess means the segmentation found something else
    if abs(geo.line_y - line_y) > 0.35 * iod or abs(geo.cx - cx) > 0.2 * iod:
        return guess
    return geo


def synth_blink(img: np.ndarray, eyes, box: Box, level: float) -> np.ndarray:
    """Eyes closed by ``level`` (0.5 half, 1 shut): the skin above each eye slides down over it
    and a lash line is drawn where the lid meets. RGB float32 of ``box``."""
    import cv2

    ys, xs = np.mgrid[box.y:box.y + box.height, box.x:box.x + box.width].astype(np.float32)
    src_y = ys.copy()
    lash = np.zeros_like(ys)
    for ecx, ecy, ew in eyes:
        hw, hh = 0.32 * ew, 0.12 * ew  # half the eye opening
        top = ecy - 3.2 * hh  # under the brow: the lid skin starts here
        lid = ecy - 1.0 * hh  # where the upper lid meets the eye now
        u = (xs - ecx) / (1.3 * hw)
        prof = np.sqrt(np.clip(1 - u ** 2, 0, 1))
        target = lid + (ecy + 0.6 * hh - lid) * level  # where the lid edge goes
        edge = lid + (target - lid) * prof
        # stretch the lid skin [top, lid] over [top, edge]
        zone = (ys >= top) & (ys <= edge) & (np.abs(u) < 1)
        sy = top + (ys - top) * (lid - top) / np.maximum(edge - top, 1e-3)
        src_y = np.where(zone, sy, src_y)
        if level > 0.6:
            lash = np.maximum(lash, np.exp(-((ys - edge - 0.3) / 0.8) ** 2) * prof ** 0.5)
    warped = cv2.remap(img, xs.astype(np.float32), src_y.astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    out = warped.astype(np.float32)
    dark = np.array([52, 36, 32], np.float32)
    a = (0.7 * lash)[..., None]
    return out * (1 - a) + dark * a


def _feather(h: int, w: int, edge: int) -> np.ndarray:
    ry = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    rx = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    r = np.minimum(ry[:, None], rx[None, :])
    t = np.clip((r + 0.5) / edge, 0, 1)
    return t * t * (3 - 2 * t)


def _even_box(x0: float, y0: float, x1: float, y1: float, limit: int, margin: int) -> Box:
    x0 = max(margin, int(math.floor(x0)) & ~1)
    y0 = max(margin, int(math.floor(y0)) & ~1)
    x1 = min(limit - margin, int(math.ceil(x1)))
    y1 = min(limit - margin, int(math.ceil(y1)))
    w, h = (x1 - x0) & ~1, (y1 - y0) & ~1
    if w < 16 or h < 16:
        raise AvatarError("the face is too close to the edge of the photo to animate the mouth")
    return Box(x0, y0, w, h)


@dataclass
class Normalised:
    """A photo cut and scaled to the asset's square (the face 1/2.6 of its side), with where
    the detector put the face and the eyes in it."""

    img: np.ndarray  # (size, size, 3) RGB
    face: tuple[float, float, float, float]  # x, y, w, h
    eyes: list  # [(cx, cy, width)] left, right
    face_px: int  # the face's width in the photo itself


def mouth_box(geo: MouthGeometry, size: int = OUT_SIZE, margin: int = 8) -> Box:
    """The box the mouth sprites cover: the mouth, the cheeks beside it and the chin below."""
    return _even_box(geo.cx - 3.2 * geo.half_w, geo.line_y - 0.6 * geo.iod,
                     geo.cx + 3.2 * geo.half_w, geo.line_y + 1.78 * geo.iod, size, margin)


def normalise(rgb: np.ndarray, size: int = OUT_SIZE) -> Normalised:
    """Detect the face (AvatarError if there is no usable one) and normalise the photo."""
    import cv2

    lm = detect_face(rgb)
    fx, fy, fw, fh = lm.face
    side = 2.6 * fw
    cx, cy = fx + fw / 2, fy + fh * 0.62
    x0, y0 = cx - side / 2, cy - side / 2
    s = size / side
    mat = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
    img = cv2.warpAffine(rgb, mat, (size, size), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    eyes = [((ex - x0) * s, (ey - y0) * s, ew * s) for ex, ey, ew in lm.eyes]
    return Normalised(img, ((fx - x0) * s, (fy - y0) * s, fw * s, fh * s), eyes, int(fw))


def find_mouth(n: Normalised) -> tuple[MouthGeometry, str]:
    """The mouth and what found it: the face mesh when its model is here and agrees with the
    eyes ("face_mesh"), else the lips' colour ("lip_colour", which falls back to where the eyes
    put a mouth when the lips do not stand out)."""
    mesh = fm.landmarks(n.img, n.face)
    geo = mouth_from_mesh(n.img, mesh, n.eyes) if mesh is not None else None
    if geo is not None:
        return geo, "face_mesh"
    return locate_mouth(n.img, n.eyes), "lip_colour"


def build_photo_avatar(rgb: np.ndarray, name: str = "photo", source: dict | None = None,
                       size: int = OUT_SIZE) -> AvatarAsset:
    """Detect, validate, normalise and synthesise. Raises AvatarError with the reason."""
    n = normalise(rgb, size)
    img, eyes = n.img, n.eyes
    geo, landmarks = find_mouth(n)
    fx, fy, fw, fh = n.face
    face_c = (fx + fw / 2, fy + fh / 2)
    face_w = fw
    log.info("photo.landmarks", face_px=n.face_px, landmarks=landmarks,
             mouth_from_lips=geo.from_segmentation, mouth_open_in_photo=geo.gap > 0)
    # light: teeth/tongue take the brightness of the skin around the mouth
    ring = img[int(geo.line_y - 0.5 * geo.iod):int(geo.line_y - 0.3 * geo.iod),
               int(geo.cx - geo.half_w):int(geo.cx + geo.half_w)]
    skin = ring.reshape(-1, 3).astype(np.float32).mean(0) if ring.size else np.full(3, 200.0)
    tint = np.clip(skin / np.array([225, 180, 155], np.float32), 0.5, 1.15).mean()
    tint = np.full(3, tint, np.float32)
    # idle poses: the head (a soft ellipse) sways; the background stays
    offsets = np.stack(_idle_offsets(N_POSES), -1).astype(np.float32)
    maxoff = int(np.ceil(np.abs(offsets).max())) + 4
    mb = mouth_box(geo, size, maxoff)
    (l_cx, l_cy, l_w), (r_cx, r_cy, r_w) = eyes
    eb = _even_box(l_cx - 0.75 * l_w, min(l_cy, r_cy) - 0.65 * max(l_w, r_w),
                   r_cx + 0.75 * r_w, max(l_cy, r_cy) + 0.4 * max(l_w, r_w), size, maxoff)
    if eb.y + eb.height > mb.y:
        eb = Box(eb.x, eb.y, eb.width, max(16, (mb.y - eb.y) & ~1))
    mfeather = _feather(mb.height, mb.width, max(6, mb.width // 10))
    if geo.mesh is not None:  # warped over the face mesh's triangles
        warp = MeshWarp(geo, mb)
        synth = lambda m: warp.synth(img, m, tint)  # noqa: E731
    else:  # a smooth displacement field placed by the lips' colour
        synth = lambda m: synth_mouth(img, geo, m, mb, tint)  # noqa: E731
    mouths = []
    for v in VISEMES:
        rgbm = synth(PHOTO_MOUTHS[v])
        mouths.append(np.dstack([np.clip(np.rint(rgbm), 0, 255).astype(np.uint8),
                                 np.rint(mfeather * 255).astype(np.uint8)]))
    mids = []
    for i, j in MID_PAIRS:  # one mouth between every two (asset.MID_PAIRS)
        rgbm = synth(blend_mouths(PHOTO_MOUTHS[VISEMES[i]], PHOTO_MOUTHS[VISEMES[j]]))
        mids.append(np.dstack([np.clip(np.rint(rgbm), 0, 255).astype(np.uint8),
                               np.rint(mfeather * 255).astype(np.uint8)]))
    efeather = _feather(eb.height, eb.width, max(4, eb.height // 6))
    blinks = [np.dstack([np.clip(np.rint(synth_blink(img, eyes, eb, lv)), 0, 255)
                         .astype(np.uint8), np.rint(efeather * 255).astype(np.uint8)])
              for lv in (0.55, 1.0)]
    poses = _idle_poses(img, offsets, face_c, face_w)
    return AvatarAsset(
        name=name,
        poses=poses,
        head_offsets=offsets,
        mouths=np.stack(mouths),
        mids=np.stack(mids),
        mouth_box=mb,
        blinks=np.stack(blinks),
        eyes_box=eb,
        fps_hint=25,
        idle_period_s=IDLE_PERIOD_S,
        blink_mean_interval_s=4.0,
        blink_duration_s=0.16,
        source={"kind": "photo", "photo_version": PHOTO_VERSION, **(source or {}),
                "face_px": n.face_px, "mouth_from_lips": bool(geo.from_segmentation),
                "landmarks": landmarks},
    )


def _idle_offsets(n: int):
    t = 2 * np.pi * np.arange(n) / n
    dx = 1.5 * np.sin(t) + 0.4 * np.sin(3 * t + 0.7)
    dy = 0.7 * np.sin(2 * t + 0.5)
    return dx, dy


def _idle_poses(img: np.ndarray, offsets: np.ndarray, face_c, face_w) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xs - face_c[0]) / (0.95 * face_w)) ** 2
                + ((ys - face_c[1] - 0.2 * face_w) / (1.35 * face_w)) ** 2)
    head = 1 - smoothstep(0.85, 1.35, r)
    poses = []
    for dx, dy in offsets:
        poses.append(cv2.remap(img, (xs - dx * head).astype(np.float32), (ys - dy * head).astype(np.float32), cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT))
    return np.ascontiguousarray(np.stack(poses))


def source_of(path: str | os.PathLike) -> dict:
    """What an asset records of the photo it came from: its file name and sha256."""
    path = Path(path)
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def register_photo(path: str | os.PathLike, registry=None, name: str | None = None,
                   renderer: str = "sprite") -> str:
    """Register a photo (cached by its content hash: the same photo is analysed once)."""
    from avatar_pipeline.avatar.registry import AvatarRegistry

    registry = registry or AvatarRegistry()
    path = Path(path)
    rgb = read_photo(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ref = f"photo-{digest[:20]}-v{PHOTO_VERSION}" + ("" if renderer == "sprite" else f"-{renderer}")
    cached = registry.ref(ref)
    if cached:
        log.info("photo.cached", avatar_id=cached, photo=path.name)
        return cached
    asset = build_photo_avatar(rgb, name=name or path.stem, source=source_of(path))
    asset.renderer = renderer
    avatar_id = registry.add(asset, ref=ref)
    log.info("photo.registered", avatar_id=avatar_id, photo=path.name)
    return avatar_id
