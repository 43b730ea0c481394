"""The README's sheet of photo mouths warped two ways: the smooth displacement field (photos
without face-mesh points) and the piecewise-affine warp over the face mesh's triangles.

    .venv/bin/python -m scripts.photo_mouth_sheet [--out docs/img/photo_mouths_mesh_warp.jpg]

The photo is the usual upload, lips closed: the astronaut portrait (public domain, in
scikit-image) with its own smile closed by the field warp. Under each row of mouths, the same
warp applied to a grid shows where the skin tears or folds.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

VISEMES_SHOWN = ("sil", "FF", "DD", "E", "aa", "oh", "ou")


def main(argv: list[str] | None = None) -> int:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import skimage.data

    from avatar_pipeline.avatar import photo
    from avatar_pipeline.avatar.mouth_mesh import MeshWarp
    from avatar_pipeline.avatar.photo_mouth import PHOTO_MOUTHS, synth_mouth

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/img/photo_mouths_mesh_warp.jpg"))
    args = p.parse_args(argv)

    def geometry(rgb):
        n = photo.normalise(rgb)
        geo, how = photo.find_mouth(n)
        assert how == "face_mesh", "needs the face-mesh model (setup fetches it)"
        return n, geo, photo.mouth_box(geo, n.img.shape[0])

    tint = np.ones(3, np.float32)
    n, geo, box = geometry(skimage.data.astronaut())
    closed = n.img.copy()
    field_geo = dataclasses.replace(geo, mesh=None)
    closed[box.y:box.y + box.height, box.x:box.x + box.width] = np.clip(
        synth_mouth(n.img, field_geo, PHOTO_MOUTHS["sil"], box, tint), 0, 255).astype(np.uint8)
    n, geo, box = geometry(closed)
    grid = np.full_like(n.img, 235)
    grid[::6, :] = grid[:, ::6] = (40, 40, 40)
    warp = MeshWarp(geo, box)
    ways = {
        "smooth field": lambda img, m: synth_mouth(img, dataclasses.replace(geo, mesh=None), m,
                                                   box, tint),
        "face mesh": lambda img, m: warp.synth(img, m, tint),
    }
    y0, x0 = int(geo.line_y - box.y - 0.45 * geo.iod), int(geo.cx - box.x - 1.9 * geo.half_w)
    h, w = int(1.15 * geo.iod), int(3.8 * geo.half_w)
    fig, axes = plt.subplots(4, len(VISEMES_SHOWN), figsize=(2.0 * len(VISEMES_SHOWN), 7.4))
    for r, (name, synth) in enumerate(ways.items()):
        for c, v in enumerate(VISEMES_SHOWN):
            for k, img in enumerate((n.img, grid)):
                out = np.clip(synth(img, PHOTO_MOUTHS[v]), 0, 255).astype(np.uint8)
                ax = axes[2 * k + r, c]
                ax.imshow(cv2.resize(out[y0:y0 + h, x0:x0 + w], (2 * w, 2 * h),
                                     interpolation=cv2.INTER_CUBIC))
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0 and k == 0:
                    ax.set_title(v)
                if c == 0:
                    ax.set_ylabel(f"{name}\n{'photo' if k == 0 else 'grid'}", fontsize=9)
    fig.suptitle("Photo mouths from a closed-mouth photo: smooth displacement field (before) and "
                 "piecewise-affine warp over the face mesh (after)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, pil_kwargs={"quality": 88})
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
