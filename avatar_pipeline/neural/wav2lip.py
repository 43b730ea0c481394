"""The neural renderer slot: a Wav2Lip-class ONNX generator, run batched, its 96x96 output
pasted back over the lower half of the face.

Signature (checked when a model is loaded; a wrong one is refused with the reason)::

    mel  float32 [N, 1, 80, 16]   log-mel window around the frame (Wav2Lip's 16 mel steps)
    face float32 [N, 6, 96, 96]   channels 0-2: the face with its lower half masked,
                                  channels 3-5: a reference face; values in [0, 1], RGB
    out  float32 [N, 3, 96, 96]   the face with a generated mouth, [0, 1]

N may be dynamic or fixed (a fixed N=1 model is run one sample at a time). Users bring their own
weights; :mod:`avatar_pipeline.neural.testmodel` makes a same-signature model for tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from avatar_pipeline.avatar.asset import AvatarAsset, Box
from config.logs import get_logger

log = get_logger(__name__)

MEL_SHAPE = (1, 80, 16)
FACE_SHAPE = (6, 96, 96)
OUT_SHAPE = (3, 96, 96)
FACE = 96


class ModelSignatureError(ValueError):
    """The ONNX file is not a Wav2Lip-class generator; the message says what differs."""


def _dims(shape) -> list:
    return [d if isinstance(d, int) else None for d in shape]


def check_signature(session) -> tuple[str, str, str, int | None]:
    """(mel input name, face input name, output name, fixed batch or None) or raise."""
    ins = session.get_inputs()
    outs = session.get_outputs()
    if len(ins) != 2:
        raise ModelSignatureError(
            f"expected 2 inputs (mel [N,1,80,16], face [N,6,96,96]), the model has {len(ins)}: "
            + ", ".join(f"{i.name}{_dims(i.shape)}" for i in ins))
    if len(outs) < 1:
        raise ModelSignatureError("the model has no output")
    by_shape = {}
    batches = set()
    for i in ins:
        if i.type != "tensor(float)":
            raise ModelSignatureError(f"input {i.name!r} is {i.type}, expected tensor(float)")
        d = _dims(i.shape)
        if len(d) != 4:
            raise ModelSignatureError(f"input {i.name!r} has rank {len(d)}, expected 4")
        batches.add(d[0])
        if tuple(d[1:]) == MEL_SHAPE:
            by_shape["mel"] = i.name
        elif tuple(d[1:]) == FACE_SHAPE:
            by_shape["face"] = i.name
        else:
            raise ModelSignatureError(
                f"input {i.name!r} has shape {d}, expected [N,1,80,16] (mel) or [N,6,96,96] "
                "(face)")
    if set(by_shape) != {"mel", "face"}:
        raise ModelSignatureError("need one mel input [N,1,80,16] and one face input "
                                  "[N,6,96,96]")
    o = outs[0]
    od = _dims(o.shape)
    if o.type != "tensor(float)" or len(od) != 4 or tuple(od[1:]) != OUT_SHAPE:
        raise ModelSignatureError(
            f"output {o.name!r} is {o.type} {od}, expected tensor(float) [N,3,96,96]")
    batches.add(od[0])
    fixed = {b for b in batches if b is not None}
    if len(fixed) > 1:
        raise ModelSignatureError(f"inputs and output disagree on the batch size: {batches}")
    fixed_batch = fixed.pop() if fixed and None not in batches else None
    return by_shape["mel"], by_shape["face"], o.name, fixed_batch


def load_model(path: str | os.PathLike, providers: list[str] | None = None):
    """An onnxruntime session for a user's model, signature checked."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelSignatureError(f"{path}: no such model file")
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        avail = ort.get_available_providers()
        prov = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                             if p in avail]
        sess = ort.InferenceSession(str(path), so, providers=prov)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelSignatureError(f"{path.name}: not a loadable ONNX model ({exc})") from None
    check_signature(sess)
    return sess


@dataclass
class FaceCrop:
    box: Box  # the square face crop in frame coordinates (at pose offset 0)
    paste: np.ndarray  # (side, side) float32 alpha: the lower half, feathered

    @cached_property
    def pasted(self) -> tuple[slice, slice]:
        """The rows and columns of the crop the paste changes (alpha > 0)."""
        ys, xs = np.nonzero(self.paste > 0)
        return slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)


def face_crop_for(asset: AvatarAsset) -> FaceCrop:
    """A square face box from the asset's eye and mouth boxes (brows to chin)."""
    e, m = asset.eyes_box, asset.mouth_box
    top = e.y - e.height // 2
    bottom = m.y + m.height
    side = bottom - top
    cx = e.x + e.width // 2
    x = int(np.clip(cx - side // 2, 0, asset.width - side))
    y = int(np.clip(top, 0, asset.height - side))
    yy = (np.arange(side, dtype=np.float32) + 0.5) / side
    xx = np.abs((np.arange(side, dtype=np.float32) + 0.5) / side - 0.5) * 2
    vert = np.clip((yy - 0.5) / 0.1, 0, 1) * np.clip((1.0 - yy) / 0.06, 0, 1)
    horz = np.clip((1.0 - xx) / 0.12, 0, 1)
    return FaceCrop(Box(x, y, side, side), np.outer(vert, horz).astype(np.float32))


class NeuralRenderer:
    """Batched Wav2Lip-class rendering for sessions of registered avatars.

    ``render(frames, mels, avatar_ids)``: ``frames`` (N, H, W, 3|4) uint8 is modified in place
    (the generated mouth is pasted back); ``mels`` (N, 1, 80, 16) float32.
    """

    def __init__(self, model_path: str | os.PathLike, providers: list[str] | None = None):
        self.session = load_model(model_path, providers)
        self.mel_name, self.face_name, self.out_name, self.fixed_batch = check_signature(
            self.session)
        self.crops: dict[str, FaceCrop] = {}
        self.refs: dict[str, np.ndarray] = {}

    def add_avatar(self, asset: AvatarAsset, key: str | None = None) -> str:
        """Prepare ``asset`` (its face box and reference face) under ``key`` (its id)."""
        key = key or asset.id
        crop = face_crop_for(asset)
        self.crops[key] = crop
        b = crop.box
        self.refs[key] = self._to96(asset.poses[0][b.y:b.y + b.height, b.x:b.x + b.width])
        return key

    def remove_avatar(self, key: str) -> None:
        self.crops.pop(key, None)
        self.refs.pop(key, None)

    @staticmethod
    def _to96(rgb: np.ndarray) -> np.ndarray:
        import cv2

        f = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (FACE, FACE),
                       interpolation=cv2.INTER_AREA)
        return (f.astype(np.float32) / 255.0).transpose(2, 0, 1)

    def infer(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """The raw model call, batched (or looped for a fixed-batch model)."""
        mels = np.ascontiguousarray(mels, np.float32)
        faces = np.ascontiguousarray(faces, np.float32)
        if self.fixed_batch is None:
            return self.session.run([self.out_name], {self.mel_name: mels,
                                                      self.face_name: faces})[0]
        fb = self.fixed_batch
        outs = []
        for i in range(0, len(mels), fb):
            m, f = mels[i:i + fb], faces[i:i + fb]
            pad = fb - len(m)
            if pad:
                m = np.concatenate([m, np.zeros((pad, *m.shape[1:]), np.float32)])
                f = np.concatenate([f, np.zeros((pad, *f.shape[1:]), np.float32)])
            outs.append(self.session.run([self.out_name], {self.mel_name: m,
                                                           self.face_name: f})[0][:fb - pad])
        return np.concatenate(outs)

    def _boxes(self, n: int, avatar_ids: list[str], offsets, width: int,
               height: int) -> list[tuple[int, int, FaceCrop]]:
        """Each frame's face box (x, y, crop), moved with its pose's head offset."""
        out = []
        for i in range(n):
            crop = self.crops[avatar_ids[i]]
            dx, dy = (0, 0) if offsets is None else (int(offsets[i][0]), int(offsets[i][1]))
            b = crop.box
            out.append((int(np.clip(b.x + dx, 0, width - b.width)),
                        int(np.clip(b.y + dy, 0, height - b.height)), crop))
        return out

    def _generate(self, faces_rgb: list[np.ndarray], mels: np.ndarray,
                  avatar_ids: list[str]) -> list[np.ndarray]:
        """One batched model call: each face crop (side, side, 3) uint8 with its mel window ->
        the generated face at the crop's size, float32 0..255."""
        import cv2

        n = len(faces_rgb)
        if mels.shape != (n, *MEL_SHAPE):
            raise ValueError(f"mels must be ({n}, 1, 80, 16), got {mels.shape}")
        faces = np.empty((n, *FACE_SHAPE), np.float32)
        for i, f in enumerate(faces_rgb):
            f96 = self._to96(f)
            faces[i, :3] = f96
            faces[i, :3, FACE // 2:] = 0.0  # Wav2Lip masks the lower half
            faces[i, 3:] = self.refs[avatar_ids[i]]
        out = self.infer(mels, faces)
        return [cv2.resize(np.clip(out[i].transpose(1, 2, 0), 0, 1) * 255,
                           (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)
                for i, f in enumerate(faces_rgb)]

    def render(self, frames: np.ndarray, mels: np.ndarray, avatar_ids: list[str],
               offsets: np.ndarray | None = None) -> np.ndarray:
        """RGB(A) frames (N, H, W, 3|4), repainted in place (and returned)."""
        self._paint(list(frames), mels, avatar_ids, offsets)
        return frames

    def _paint(self, views: list[np.ndarray], mels, avatar_ids, offsets) -> None:
        """Repaint (H, W, 3|4) frames in place with one model call."""
        height, width = views[0].shape[:2]
        boxes = self._boxes(len(views), avatar_ids, offsets, width, height)
        crops = [v[y:y + c.box.height, x:x + c.box.width, :3]
                 for v, (x, y, c) in zip(views, boxes, strict=True)]
        gens = self._generate(crops, mels, avatar_ids)
        for crop_px, (_x, _y, c), gen in zip(crops, boxes, gens, strict=True):
            crop_px[...] = _paste(crop_px, gen, c.paste)

    def repaint(self, frames: list[np.ndarray], fmt: str, width: int, height: int,
                mels: np.ndarray, avatar_ids: list[str],
                offsets: np.ndarray | None = None) -> None:
        """Composed frames as the engine makes them (each a 1-D uint8 row in ``fmt``, i420 or
        rgba, e.g. views into a compositor's batch), repainted in place with one model call:
        only the feathered lower face changes."""
        if fmt == "rgba":
            self._paint([f.reshape(height, width, 4) for f in frames], mels, avatar_ids, offsets)
            return
        from avatar_pipeline.compose.base import i420_region_to_rgb, write_i420_region

        boxes = self._boxes(len(frames), avatar_ids, offsets, width, height)
        regions, crops = [], []
        for i, (x, y, crop) in enumerate(boxes):
            side = crop.box.width
            x0, y0 = x & ~1, y & ~1  # I420 regions are even-aligned
            w = min(width, (x + side + 1) & ~1) - x0
            h = min(height, (y + side + 1) & ~1) - y0
            rgb = i420_region_to_rgb(frames[i], width, height, x0, y0, w, h)
            regions.append((x0, y0, rgb))
            crops.append(rgb[y - y0:y - y0 + side, x - x0:x - x0 + side])
        gens = self._generate(crops, mels, avatar_ids)
        for i, ((x, y, crop), (x0, y0, rgb), gen) in enumerate(zip(boxes, regions, gens,
                                                                    strict=True)):
            # only the pasted part of the crop is blended and encoded again
            rows, cols = crop.pasted
            ys, xs = slice(y - y0 + rows.start, y - y0 + rows.stop), \
                slice(x - x0 + cols.start, x - x0 + cols.stop)
            rgb[ys, xs] = _paste(rgb[ys, xs], gen[rows, cols], crop.paste[rows, cols])
            ey0, ex0 = ys.start & ~1, xs.start & ~1
            ey1, ex1 = min(rgb.shape[0], (ys.stop + 1) & ~1), min(rgb.shape[1], (xs.stop + 1) & ~1)
            mask = np.zeros((ey1 - ey0, ex1 - ex0), bool)
            mask[ys.start - ey0:ys.stop - ey0, xs.start - ex0:xs.stop - ex0] = \
                crop.paste[rows, cols] > 0
            write_i420_region(frames[i], width, height, x0 + ex0, y0 + ey0,
                              rgb[ey0:ey1, ex0:ex1], mask)


def _paste(region: np.ndarray, gen: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The generated face over ``region`` (uint8), through the feathered lower-face alpha."""
    a = alpha[..., None]
    return np.clip(np.rint(gen * a + region.astype(np.float32) * (1 - a)), 0,
                   255).astype(np.uint8)
