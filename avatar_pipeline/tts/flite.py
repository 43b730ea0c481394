"""Flite's English voices (Debian's ``flite``), with every phone's timing.

Used only to make viseme training speech, beside festival's (``tts.festival``): flite's
clustergen voices ``awb`` (Scottish English, male) and ``rms`` (US English, male) are
statistical-parametric voices trained on CMU ARCTIC recordings of two more real people. Flite
and its voices are free to use, modify and sell (BSD-style licence,
``/usr/share/doc/flite/copyright``).

Timing: ``flite -psdur`` prints each phone's end time from the utterance's ``Segment``
relation; clustergen generates its frames (5 ms) from those durations, so labels follow the
audio within a frame. Phones are flite's US set (ARPAbet, lowercase, ``pau`` for silence),
the same as festival's.

Flite starts in milliseconds with its voices compiled in, so each utterance is one process.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from avatar_pipeline.tts.festival import FestivalRequest, read_speech
from avatar_pipeline.tts.types import Speech

VOICES = ("awb", "rms")
DEBIAN_PACKAGES = ("flite",)


class FliteUnavailable(RuntimeError):
    pass


def available() -> bool:
    return shutil.which("flite") is not None


def _clean(text: str) -> str:
    # one argument to flite, never an option or a file name: printable text, no leading dash
    return " ".join("".join(c if c.isprintable() else " " for c in text).split()).lstrip("-")


def synthesize(r: FestivalRequest, timeout_s: float = 120.0) -> Speech:
    """Speak one request (``voice`` one of ``VOICES``, ``stretch`` > 1 slower)."""
    if not available():
        raise FliteUnavailable("flite is not installed (apt-get install flite)")
    if r.voice not in VOICES:
        raise ValueError(f"unknown flite voice {r.voice!r}; one of {list(VOICES)}")
    text = _clean(r.text)
    if not text:
        raise ValueError("nothing to speak")
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        out = subprocess.run(
            ["flite", "-voice", r.voice, "--setf", f"duration_stretch={float(r.stretch):.3f}",
             "-psdur", "-t", text, "-o", str(wav)],
            capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0 or not wav.exists():
            raise RuntimeError(f"flite did not speak {r.text!r}: {out.stderr[-500:]}")
        segs = []
        for tok in out.stdout.split():
            name, _, end = tok.rpartition(":")
            if name:
                segs.append((name, float(end)))
        return read_speech(r, wav, segs)
