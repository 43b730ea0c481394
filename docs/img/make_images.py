"""Regenerate the README images in this folder (run from the repository root):

    .venv/bin/python docs/img/make_images.py

mouths.png (the tutor's 15 mouths), tutor.png, photo_mouths.jpg (the astronaut portrait's 15
mouths), render_en.png / render_fa.png / render_photo.jpg (frames decoded back from rendered
videos), timeline_en.png (the exact TTS viseme track under the waveform), timeline_audio.png
(the same kind of sentence through --audio: visemes from the audio model).
photo_mouths_mesh_warp.jpg comes from ``python -m scripts.photo_mouth_sheet``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "img"


def _frames(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _strip(video, idx, out, crop, scale=0.6, fps=25):
    from PIL import Image, ImageDraw, ImageFont

    fr = _frames(video)
    tiles = []
    font = ImageFont.load_default(size=14)
    for i in idx:
        im = Image.fromarray(fr[i][crop[1]:crop[3], crop[0]:crop[2]])
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.LANCZOS)
        ImageDraw.Draw(im).text((6, 4), f"{i / fps:.2f} s", fill=(20, 20, 20), font=font)
        tiles.append(np.asarray(im))
    img = Image.fromarray(np.concatenate(tiles, 1))
    if out.suffix == ".jpg":
        img.save(out, quality=90)
    else:
        img.save(out, optimize=True)


def main() -> int:
    import skimage.data
    from PIL import Image

    from avatar_pipeline.avatar.default import contact_sheet, render
    from avatar_pipeline.cli import main as cli
    from avatar_pipeline.compose.offline import mouth_sheet
    from config.logs import setup_logging

    setup_logging("warning")
    Image.fromarray(contact_sheet()).save(OUT / "mouths.png", optimize=True)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cache = ["--cache-dir", str(d / "cache")]
        photo = d / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).save(photo)
        en, fa, ph = d / "en.mp4", d / "fa.mp4", d / "photo.mp4"
        cli([*cache, "render", "--no-progress", "--text",
             "Hello! Today we will practise a few new words together.", "-o", str(en),
             "--timeline", str(OUT / "timeline_en.png")])
        cli([*cache, "render", "--no-progress", "--lang", "fa", "--text",
             "سلام، امروز با هم فارسی یاد می‌گیریم.", "-o", str(fa)])
        cli([*cache, "render", "--no-progress", "--avatar", str(photo), "--text",
             "Good morning! Let's read the story together.", "-o", str(ph)])
        import wave

        from avatar_pipeline.tts import default_engine

        sp = default_engine().synthesize("Good morning! Let's read the story together.", "en")
        wav = d / "speech.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sp.sample_rate)
            w.writeframes(sp.pcm.tobytes())
        cli([*cache, "render", "--no-progress", "--audio", str(wav), "-o", str(d / "au.mp4"),
             "--timeline", str(OUT / "timeline_audio.png")])
        Image.fromarray(render("sil")).save(OUT / "tutor.png", optimize=True)
        crop = (96, 120, 416, 440)
        _strip(en, [3, 12, 22, 33, 45, 57], OUT / "render_en.png", crop)
        _strip(fa, [2, 10, 20, 30, 40, 52], OUT / "render_fa.png", crop)
        _strip(ph, [4, 14, 24, 34, 44, 54], OUT / "render_photo.jpg", (96, 110, 416, 430))
        from avatar_pipeline.avatar import AvatarRegistry

        sheet = Image.fromarray(mouth_sheet(AvatarRegistry(d / "cache").resolve(str(photo))))
        sheet = sheet.resize((int(sheet.width * 0.75), int(sheet.height * 0.75)), Image.LANCZOS)
        sheet.save(OUT / "photo_mouths.jpg", quality=88)
    print("wrote", ", ".join(sorted(p.name for p in OUT.iterdir() if p.suffix != ".py")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
