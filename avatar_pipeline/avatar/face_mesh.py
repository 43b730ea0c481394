"""Face-mesh landmarks for photo registration: MediaPipe's face landmark model (468 points, Apache
2.0), the ``.tflite`` file that ships inside the ``mediapipe==0.10.14`` wheel on PyPI, run with
``ai-edge-litert`` (the TFLite runtime). mediapipe itself is never installed: it pins protobuf
below 5, which breaks livekit's.

    python -m avatar_pipeline.avatar.face_mesh fetch    # setup runs this once

downloads the wheel from PyPI (``pip download``, nothing installed), takes the model out, checks
its sha256 and keeps it in the cache (``FLEET_FACE_MESH`` names another file). Registration then
never touches the network; without the model (or the runtime) it falls back to the lip-colour
landmarks, and the asset records which were used.

The model wants a 192x192 RGB crop, values 0..1, around the face (1.5 times the detector's box,
as MediaPipe crops it); it answers 468 (x, y, z) points in the crop's pixels and a face score.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from config.logs import get_logger

log = get_logger(__name__)

WHEEL = "mediapipe==0.10.14"
MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
MODEL_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
INPUT = 192
CROP_SCALE = 1.5
MIN_SCORE = 0.5  # the face flag (sigmoid of the model's second output)

# mesh indices: lip corners, the outer and inner edges of both lips at the centre, the inner
# corners (where the opening ends)
LEFT_CORNER, RIGHT_CORNER = 61, 291
UPPER_OUTER, UPPER_INNER, LOWER_INNER, LOWER_OUTER = 0, 13, 14, 17
INNER_LEFT, INNER_RIGHT = 78, 308


def model_file() -> Path:
    env = os.environ.get("FLEET_FACE_MESH")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "avatar-fleet" / "models" / f"face_landmark-{MODEL_SHA256[:12]}.tflite"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(dest: Path | None = None) -> Path:
    """The model file, downloaded from PyPI's mediapipe wheel once and checked."""
    dest = dest or model_file()
    if dest.is_file() and _sha(dest) == MODEL_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as d:
        log.info("face_mesh.fetching", wheel=WHEEL)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", WHEEL, "-d", d], check=True)
        wheel = next(Path(d).glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src:
            tmp = Path(d) / "model.tflite"
            with tmp.open("wb") as out:
                shutil.copyfileobj(src, out)
        got = _sha(tmp)
        if got != MODEL_SHA256:
            raise RuntimeError(f"{WHEEL} {MEMBER}: sha256 {got}, expected {MODEL_SHA256}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), dest)
    log.info("face_mesh.fetched", path=str(dest))
    return dest


@cache
def _interpreter(path: str):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    return it


def available() -> bool:
    """The model is in the cache (checked) and the runtime imports."""
    path = model_file()
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return path.is_file() and _sha(path) == MODEL_SHA256


@dataclass
class Mesh:
    points: np.ndarray  # (468, 3) x, y in image pixels, z relative depth
    score: float

    def xy(self, i: int) -> np.ndarray:
        return self.points[i, :2]


def landmarks(rgb: np.ndarray, face: tuple[float, float, float, float]) -> Mesh | None:
    """The 468 points of the face in ``face`` (x, y, w, h: a detector's box), or None when the
    model is not here or does not see a face there."""
    if not available():
        return None
    import cv2

    fx, fy, fw, fh = face
    side = CROP_SCALE * max(fw, fh)
    x0, y0 = fx + fw / 2 - side / 2, fy + fh / 2 - side / 2
    s = INPUT / side
    mat = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
    crop = cv2.warpAffine(np.ascontiguousarray(rgb[..., :3]), mat, (INPUT, INPUT),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    it = _interpreter(str(model_file()))
    it.set_tensor(it.get_input_details()[0]["index"], (crop.astype(np.float32) / 255.0)[None])
    it.invoke()
    outs = it.get_output_details()
    pts = it.get_tensor(outs[0]["index"]).reshape(468, 3).astype(np.float64)
    score = float(1 / (1 + np.exp(-float(it.get_tensor(outs[1]["index"]).ravel()[0]))))
    if score < MIN_SCORE:
        return None
    pts[:, :2] = pts[:, :2] / s + [x0, y0]
    pts[:, 2] = pts[:, 2] / s
    return Mesh(pts, score)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avatar_pipeline.avatar.face_mesh",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["fetch"])
    p.parse_args(argv)
    from config.logs import setup_logging

    setup_logging("warning")  # stdout carries the path only
    print(fetch())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
