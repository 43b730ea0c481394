"""One photo registration as a job of its own process: what the router runs for
``POST /v1/avatars`` (``router/avatars/jobs.py``), so that face detection and mouth synthesis
(seconds of CPU, numpy/OpenCV) never run in the router's event loop, and the router never imports
the pipeline.

    python -m avatar_pipeline.avatar.job PHOTO OUT_DIR [--name NAME] [--renderer neural]

writes ``OUT_DIR/asset/`` (the asset, as :func:`~avatar_pipeline.avatar.asset.save_asset` lays it
out, plus ``preview.png``: the 15 mouths as a learner would see them) and prints one JSON line:
``{"ok": true, "asset_id", "name", "width", "height"}``, or ``{"ok": false, "reason"}`` (exit 2)
when the photo is refused (too large, not an image, no frontal face, ...). Limits are checked
before anything is decoded (:func:`~avatar_pipeline.avatar.photo.read_photo`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from config.avatars import RENDERERS


def register(photo: Path, out: Path, name: str | None = None, renderer: str = "sprite") -> dict:
    from PIL import Image

    from avatar_pipeline.avatar.asset import save_asset
    from avatar_pipeline.avatar.photo import build_photo_avatar, read_photo, source_of
    from avatar_pipeline.compose.offline import mouth_sheet

    rgb = read_photo(photo)
    asset = build_photo_avatar(rgb, name=name or photo.stem, source=source_of(photo))
    asset.renderer = renderer
    asset_dir = out / "asset"
    asset_id = save_asset(asset, asset_dir)
    Image.fromarray(mouth_sheet(asset)).save(asset_dir / "preview.png", optimize=True)
    return {"ok": True, "asset_id": asset_id, "name": asset.name, "width": asset.width,
            "height": asset.height}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avatar_pipeline.avatar.job",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("photo", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--name")
    p.add_argument("--renderer", choices=RENDERERS, default="sprite")
    args = p.parse_args(argv)
    from avatar_pipeline.avatar.asset import AvatarError
    from config.logs import setup_logging

    setup_logging("warning")  # stderr; stdout carries the one result line
    try:
        result = register(args.photo, args.out, args.name, args.renderer)
    except AvatarError as exc:
        print(json.dumps({"ok": False, "reason": str(exc)}), flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
