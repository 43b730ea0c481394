"""Labelled training data synthesised with espeak-ng: audio -> 16 kHz log-mel, labels at 10 ms.

    python -m avatar_pipeline.visemes.data --out DIR --hours 1.0 --seed 0 [--split train]

Each utterance is one sentence from the project's multilingual list, or a short run of words from
the word lists, spoken by one espeak-ng voice (language voice + a variant from ``voices/!v``)
at a random rate / pitch / pitch range / word gap. Labels come from the phoneme events (exact
sample positions), one viseme id per 10 ms frame. Augmentation, each step with a probability:
reverberation (synthetic exponential-decay RIR), resampling through 8/16/24/48 kHz, an Opus
round trip through PyAV (libopus at 16 kHz, 12-32 kbit/s), noise (white / pink / brown / hum)
at 5-30 dB SNR, gain (-25..+6 dB) with occasional clipping, int16 quantisation.

Splits (all deterministic from the seed; a fresh process makes the same corpus):

- ``train``: training voices, training sentences + word lists, rate 120-280 wpm, pitch 20-80.
- ``val``: training voices, held-out sentences (for model selection during training).
- ``heldout_voices``: voices never used in training (``HELDOUT_VOICES``), held-out sentences.
- ``heldout_style``: training voices, held-out sentences, a speaking style outside the training
  range: fast and high (300-360 wpm, pitch 85-99) or slow and low (80-105 wpm, pitch 0-12).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avatar_pipeline.features import SAMPLE_RATE, logmel
from avatar_pipeline.tts import TimedPhoneme, default_engine, viseme_ids_from_phonemes
from avatar_pipeline.visemes.corpus import sentences, word_lists
from config.logs import get_logger

log = get_logger(__name__)

FRAME_RATE = 100  # labels / feature frames per second

# Whole voices kept out of training, used only by the held-out evaluation.
HELDOUT_VOICES: tuple[str, ...] = (
    "f4", "m6", "klatt3", "Andrea", "steph2", "iven3", "quincy", "grandma", "robosoft4",
    "Henrique", "belinda", "Storm",
)
# espeak language voices per training language (en has two accents)
LANG_VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en"), "es": ("es", "es-419"), "zh": ("cmn",), "fa": ("fa",), "fr": ("fr",),
    "de": ("de",), "it": ("it",), "pt": ("pt", "pt-br"),
}
# how often each language is drawn (the four product languages dominate)
LANG_WEIGHTS: dict[str, float] = {
    "en": 0.28, "es": 0.18, "zh": 0.18, "fa": 0.18, "fr": 0.05, "de": 0.05, "it": 0.04, "pt": 0.04,
}
SPLITS = ("train", "val", "heldout_voices", "heldout_style")
DATA_VERSION = 3  # bump when the generator changes (the trainer rebuilds a stale cache)


def all_variants() -> list[str]:
    import espeakng_loader

    d = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    from avatar_pipeline.tts.espeak import UNSAFE_VARIANTS

    return sorted(p.name for p in d.iterdir()
                  if p.is_file() and " " not in p.name and p.name not in UNSAFE_VARIANTS)


def train_variants() -> list[str]:
    held = set(HELDOUT_VOICES)
    return [v for v in all_variants() if v not in held]


@dataclass
class AugmentConfig:
    p_reverb: float = 0.35
    p_resample: float = 0.5
    p_opus: float = 0.3
    p_noise: float = 0.6
    p_clip: float = 0.05
    snr_db: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class UttSpec:
    language: str
    espeak_lang: str
    text: str
    variant: str | None
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    lead_s: float
    tail_s: float
    aug: dict = field(default_factory=dict)


def _pick_text(rng: np.random.Generator, lang: str, split: str) -> str:
    if split == "train" and rng.random() < 0.25:
        lines = [w for w in word_lists() if w.language == lang]
        words = lines[rng.integers(len(lines))].text.split()
        k = int(rng.integers(2, 7))
        start = int(rng.integers(0, max(1, len(words) - k)))
        return " ".join(words[start:start + k])
    want_heldout = split != "train"
    pool = [s for s in sentences() if s.language == lang and s.heldout == want_heldout]
    return pool[rng.integers(len(pool))].text


def sample_spec(rng: np.random.Generator, split: str, aug: AugmentConfig) -> UttSpec:
    langs = list(LANG_WEIGHTS)
    p = np.array([LANG_WEIGHTS[x] for x in langs])
    lang = langs[rng.choice(len(langs), p=p / p.sum())]
    voices = LANG_VOICES[lang]
    espeak_lang = voices[rng.integers(len(voices))]
    pool = list(HELDOUT_VOICES) if split == "heldout_voices" else train_variants()
    variant = None if (split != "heldout_voices" and rng.random() < 0.1) else \
        pool[rng.integers(len(pool))]
    if split == "heldout_style":
        if rng.random() < 0.5:
            rate, pitch = int(rng.integers(300, 361)), int(rng.integers(85, 100))
        else:
            rate, pitch = int(rng.integers(80, 106)), int(rng.integers(0, 13))
    else:
        rate, pitch = int(rng.integers(120, 281)), int(rng.integers(20, 81))
    a = {
        "reverb": bool(rng.random() < aug.p_reverb),
        "rt60": float(rng.uniform(0.15, 0.8)),
        "drr_db": float(rng.uniform(-2, 12)),
        "via_rate": int(rng.choice([8000, 16000, 24000, 48000])) if rng.random() < aug.p_resample
        else 0,
        "opus_kbps": int(rng.choice([12, 16, 24, 32])) if rng.random() < aug.p_opus else 0,
        "noise": str(rng.choice(["white", "pink", "brown", "hum"])) if rng.random() < aug.p_noise
        else "",
        "snr_db": float(rng.choice(aug.snr_db)),
        "gain_db": float(rng.uniform(-25, 6)),
        "clip": bool(rng.random() < aug.p_clip),
        "seed": int(rng.integers(2**31)),
    }
    return UttSpec(
        language=lang, espeak_lang=espeak_lang, text=_pick_text(rng, lang, split),
        variant=variant, rate=rate, pitch=pitch, pitch_range=int(rng.integers(10, 101)),
        word_gap=int(rng.choice([0, 0, 0, 1, 2, 4])),
        # silences up to 1.2 s, so that long pauses (digital zeros or just noise) are seen
        lead_s=float(rng.uniform(0.0, 1.2) if rng.random() < 0.3 else rng.uniform(0.0, 0.3)),
        tail_s=float(rng.uniform(0.0, 1.2) if rng.random() < 0.3 else rng.uniform(0.0, 0.3)),
        aug=a,
    )


# --- augmentation ---------------------------------------------------------------------------

def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if sr_in == sr_out:
        return x
    g = np.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, sr: int, rt60: float, drr_db: float) -> np.ndarray:
    """Direct path + exponentially decaying noise tail (RT60 seconds), energy ratio ``drr_db``."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * sr)] = 0.0  # first reflections arrive after ~2 ms
    tail *= np.sqrt(1.0 / (np.sum(tail ** 2) + 1e-12)) * 10 ** (-drr_db / 20)
    tail[0] = 1.0
    return tail.astype(np.float32)


def opus_roundtrip(x: np.ndarray, sr: int, kbps: int) -> np.ndarray:
    """Encode with libopus (PyAV) and decode back; the decoder drops the pre-skip, so the
    output is sample-aligned with the input."""
    import av

    buf = io.BytesIO()
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)[None, :]
    with av.open(buf, "w", format="ogg") as out:
        st = out.add_stream("libopus", rate=sr)
        st.bit_rate = kbps * 1000
        st.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sr
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    buf.seek(0)
    chunks = []
    dec_rate = sr
    with av.open(buf, "r") as inp:
        for fr in inp.decode(audio=0):
            a = fr.to_ndarray().reshape(-1)
            dec_rate = fr.sample_rate
            chunks.append(a.astype(np.float32) / (32768.0 if a.dtype == np.int16 else 1.0))
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if dec_rate != sr:  # ffmpeg's Opus decoder always outputs 48 kHz
        y = _resample(y, dec_rate, sr)
    y = y[: len(x)]
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def _noise(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    if kind == "hum":
        t = np.arange(n) / sr
        f0 = rng.choice([50.0, 60.0])
        y = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        return (y + 0.1 * rng.standard_normal(n)).astype(np.float32)
    w = rng.standard_normal(n)
    if kind == "white":
        return w.astype(np.float32)
    spec = np.fft.rfft(w)
    f = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0)
    spec /= np.sqrt(f) if kind == "pink" else f
    return np.fft.irfft(spec, n).astype(np.float32)


def augment(x: np.ndarray, sr: int, a: dict) -> np.ndarray:
    """Float audio at ``sr`` -> augmented float audio at 16 kHz (same duration)."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(a.get("seed", 0))
    if a.get("reverb"):
        h = synthetic_rir(rng, sr, a["rt60"], a["drr_db"])
        x = fftconvolve(x, h)[: len(x)].astype(np.float32)
    if a.get("via_rate"):
        x = _resample(x, sr, a["via_rate"])
        sr = a["via_rate"]
    x = _resample(x, sr, SAMPLE_RATE)
    if a.get("opus_kbps"):
        x = opus_roundtrip(x, SAMPLE_RATE, a["opus_kbps"])
    if a.get("noise"):
        nz = _noise(rng, a["noise"], len(x), SAMPLE_RATE)
        ps = float(np.mean(x ** 2)) + 1e-12
        pn = float(np.mean(nz ** 2)) + 1e-12
        x = x + nz * np.sqrt(ps / pn / 10 ** (a["snr_db"] / 10))
    peak = float(np.max(np.abs(x))) + 1e-9
    x = x / peak * 0.5 * 10 ** (a.get("gain_db", 0.0) / 20)
    if a.get("clip"):
        x = x * 10 ** (12 / 20)
    x = np.clip(x, -1.0, 32767 / 32768)
    return (np.round(x * 32768) / 32768).astype(np.float32)


def render(spec: UttSpec, engine=None) -> tuple[np.ndarray, np.ndarray]:
    """One utterance -> (16 kHz float32 audio, int64 viseme id per 10 ms frame)."""
    engine = engine or default_engine()
    sp = engine.synthesize(spec.text, spec.espeak_lang, voice=spec.variant, rate=spec.rate,
                           pitch=spec.pitch, pitch_range=spec.pitch_range,
                           word_gap=spec.word_gap, seed=spec.aug.get("seed", 0))
    sr = sp.sample_rate
    lead, tail = int(spec.lead_s * sr), int(spec.tail_s * sr)
    x = np.concatenate([np.zeros(lead, np.float32), sp.pcm.astype(np.float32) / 32768.0,
                        np.zeros(tail, np.float32)])
    y = augment(x, sr, spec.aug)
    off = lead / sr
    phs = [TimedPhoneme(p.phoneme, p.start_s + off, p.end_s + off, p.viseme) for p in sp.phonemes]
    labels = viseme_ids_from_phonemes(phs, len(y) / SAMPLE_RATE, FRAME_RATE)
    return y, labels


def iter_split(split: str, seconds: float, seed: int, aug: AugmentConfig | None = None,
               progress: bool = True):
    """Yield (spec, audio16k, labels) until ``seconds`` of audio are made."""
    from tqdm import tqdm

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    aug = aug if aug is not None else AugmentConfig()
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    engine = default_engine()
    done = 0.0
    with tqdm(total=round(seconds), unit="s", desc=f"synth {split}", disable=not progress) as bar:
        while done < seconds:
            spec = sample_spec(rng, split, aug)
            x, labels = render(spec, engine)
            d = len(x) / SAMPLE_RATE
            done += d
            bar.update(round(done) - bar.n if round(done) <= seconds else 0)
            yield spec, x, labels


def build(out: Path, split: str, hours: float, seed: int, aug: AugmentConfig | None = None,
          progress: bool = True) -> Path:
    """Synthesise a split and save ``{split}.npz``: feats (T, 80) float16, labels (T,) int8,
    offsets (U+1,) per utterance, and ``{split}.json`` with each utterance's spec."""
    out.mkdir(parents=True, exist_ok=True)
    feats, labels, offsets, specs = [], [], [0], []
    for spec, x, lab in iter_split(split, hours * 3600, seed, aug, progress):
        f = logmel(x)
        n = min(len(f), len(lab))
        feats.append(f[:n].astype(np.float16))
        labels.append(lab[:n].astype(np.int8))
        offsets.append(offsets[-1] + n)
        specs.append(asdict(spec))
    path = out / f"{split}.npz"
    np.savez(path, feats=np.concatenate(feats), labels=np.concatenate(labels),
             offsets=np.asarray(offsets, np.int64))
    (out / f"{split}.json").write_text(json.dumps({"seed": seed, "hours": hours,
                                                   "version": DATA_VERSION,
                                                   "utterances": specs}, ensure_ascii=False))
    log.info("corpus_written", split=split, path=str(path), utterances=len(specs),
             frames=int(offsets[-1]))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--hours", type=float, default=1.0, help="hours of training audio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    ap.add_argument("--eval-hours", type=float, default=0.1, help="hours per non-train split")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    splits = SPLITS if args.split == "all" else (args.split,)
    for s in splits:
        build(args.out, s, args.hours if s == "train" else args.eval_hours, args.seed)


if __name__ == "__main__":
    main()
