"""Festival's English voices (Debian's ``festival`` + ``festvox-*``), with every phone's timing.

Used only to make viseme training speech: the voices are old (diphone concatenation and one
HTS voice), but their spectra come from recordings of real people (CMU's kal and ked, and
ARCTIC's slt), which the other training sources lack. Festival, its lexicon and these voices
are free to use, modify and sell (MIT-style and BSD licences, ``/usr/share/doc/festvox-*/
copyright``).

Timing: each synthesised utterance's ``Segment`` relation holds every phone's end time; the
waveform is built to those targets (diphone: pitch-synchronous overlap-add onto them; HTS: the
state durations that generate the frames), so labels follow the audio within a pitch period.
Phones are festival's US set (ARPAbet, lowercase, ``pau`` for silence).

One ``festival`` process synthesises a whole batch: start-up costs more than an utterance.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_pipeline.tts.types import Speech, TimedPhoneme
from avatar_pipeline.visemes.maps import arpabet_to_viseme

# voice name -> festival's command that selects it
VOICES: dict[str, str] = {
    "kal": "voice_kal_diphone",
    "ked": "voice_ked_diphone",
    "slt": "voice_cmu_us_slt_arctic_hts",
}
DEBIAN_PACKAGES = ("festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
_SILENCE = {"pau", "h#", "brth", "#"}


class FestivalUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class FestivalRequest:
    text: str
    voice: str = "kal"
    stretch: float = 1.0  # Duration_Stretch: > 1 speaks slower


def _quote(text: str) -> str:
    # festival's reader takes a double-quoted string; backslash escapes quote and backslash
    clean = "".join(c if c.isprintable() else " " for c in text)
    return '"' + clean.replace("\\", " ").replace('"', " ") + '"'


_SCRIPT_HEAD = """
(define (avatar-say text wav)
  (let ((utt (eval (list 'Utterance 'Text text))))
    (utt.synth utt)
    (utt.save.wave utt wav 'riff)
    (format t "UTT %s\\n" wav)
    (mapcar (lambda (s) (format t "SEG %s %f\\n" (item.name s) (item.feat s "end")))
            (utt.relation.items utt 'Segment))
    (format t "END\\n")))
"""


def available() -> bool:
    return shutil.which("festival") is not None


def phone_viseme(phone: str) -> str:
    if phone in _SILENCE:
        return "sil"
    return arpabet_to_viseme(phone)


def synthesize_batch(requests: list[FestivalRequest], timeout_s: float = 600.0) -> list[Speech]:
    """Speak every request in one festival process; returns them in order."""
    if not available():
        raise FestivalUnavailable("festival is not installed (apt-get install "
                                  + " ".join(DEBIAN_PACKAGES) + ")")
    for r in requests:
        if r.voice not in VOICES:
            raise ValueError(f"unknown festival voice {r.voice!r}; one of {sorted(VOICES)}")
    with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
        lines = [_SCRIPT_HEAD]
        voice = None
        for i, r in enumerate(requests):
            if r.voice != voice:
                lines.append(f"({VOICES[r.voice]})")
                voice = r.voice
            lines.append(f"(Parameter.set 'Duration_Stretch {float(r.stretch):.3f})")
            lines.append(f"(avatar-say {_quote(r.text)} \"{tmp}/{i}.wav\")")
        script = Path(tmp) / "batch.scm"
        script.write_text("\n".join(lines) + "\n", encoding="latin-1", errors="replace")
        out = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True,
                             timeout=timeout_s, encoding="latin-1")
        segs: dict[str, list[tuple[str, float]]] = {}
        cur = None
        for line in out.stdout.splitlines():
            if line.startswith("UTT "):
                cur = line[4:].strip()
                segs[cur] = []
            elif line.startswith("SEG ") and cur is not None:
                _, name, end = line.split()
                segs[cur].append((name, float(end)))
        result = []
        for i, r in enumerate(requests):
            wav = f"{tmp}/{i}.wav"
            if wav not in segs or not Path(wav).exists():
                raise RuntimeError(f"festival did not speak {r.text!r}: {out.stderr[-500:]}")
            result.append(read_speech(r, Path(wav), segs[wav]))
        return result


def read_speech(r: FestivalRequest, wav: Path, segs: list[tuple[str, float]]) -> Speech:
    """A synthesised wav and its phones' end times (festival's US set) -> ``Speech``."""
    with wave.open(str(wav)) as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels())[:, 0]
    dur = len(pcm) / sr
    phones, start = [], 0.0
    for name, end in segs:
        end = min(end, dur)
        if end > start:
            phones.append(TimedPhoneme(name, start, end, phone_viseme(name)))
            start = end
    if start < dur:
        phones.append(TimedPhoneme("pau", start, dur, "sil"))
    return Speech(pcm=pcm.copy(), sample_rate=sr, phonemes=phones, text=r.text, language="en",
                  voice=r.voice)
