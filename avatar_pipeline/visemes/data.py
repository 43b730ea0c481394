"""Labelled training data: espeak-ng, Kokoro and festival speech -> 16 kHz log-mel, labels
at 10 ms.

    python -m avatar_pipeline.visemes.data --out DIR --hours 3 --kokoro-hours 1.5 \
        --festival-hours 1.25 --seed 0

Three sources, all with exact labels (each phoneme's sample position or frame count):

- **espeak-ng**: one sentence from the project's multilingual list, or a short run of words
  from the word lists, spoken by one espeak-ng voice (language voice + a variant from
  ``voices/!v``) at a random rate / pitch / pitch range / word gap. Fast to make.
- **Kokoro-82M** (``kokoro_data``): neural speech by many mixed speakers in eight languages,
  slow to make on a CPU, so generated once into a cache and augmented here afresh.
- **festival** (``avatar_pipeline.tts.festival``): three English voices built from recordings
  of real people (two diphone, one HTS), and flite's two clustergen voices
  (``avatar_pipeline.tts.flite``; ``--no-flite`` leaves them out), English text at 0.75-1.4x
  rate. Fast to make.

Every utterance is augmented (``augment``: voice conversion, EQ, reverb, resampling, codecs,
noise, gain and clipping) with its own recorded parameters.

Splits (all deterministic from the seed; a fresh process makes the same corpus):

- ``train``: training voices, training sentences + word lists, rate 120-280 wpm, pitch 20-80.
- ``val``: training voices, held-out sentences (for model selection during training).
- ``heldout_voices``: voices never used in training (``HELDOUT_VOICES``), held-out sentences.
- ``heldout_style``: training voices, held-out sentences, a speaking style outside the training
  range: fast and high (300-360 wpm, pitch 85-99) or slow and low (80-105 wpm, pitch 0-12).
- ``kokoro_train`` / ``kokoro_val``: Kokoro's ``train`` / ``val`` speech, ``copies``
  augmented versions of each utterance.
- ``festival_train`` / ``festival_val``: festival and flite speech of training / held-out
  sentences.

Never used: the Piper voice reserved for evaluation (``avatar_pipeline.tts.piper``), Kokoro's
held-out speakers, the evaluation sentences, and any human speech.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avatar_pipeline.features import SAMPLE_RATE, logmel
from avatar_pipeline.tts import (
    TimedPhoneme,
    default_engine,
    festival,
    flite,
    viseme_ids_from_phonemes,
)
from avatar_pipeline.viseme_set import VISEMES
from avatar_pipeline.visemes import augment as aug_mod
from avatar_pipeline.visemes.augment import AugmentConfig, opus_roundtrip  # noqa: F401
from avatar_pipeline.visemes.corpus import english_text, sentences, word_lists
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
DATA_VERSION = 4  # bump when the generator changes (the trainer rebuilds a stale cache)


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


def _word_run(rng: np.random.Generator, lang: str) -> str:
    """2-6 consecutive words from one of the language's word lists."""
    lines = [w for w in word_lists() if w.language == lang]
    words = lines[rng.integers(len(lines))].text.split()
    k = int(rng.integers(2, 7))
    start = int(rng.integers(0, max(1, len(words) - k)))
    return " ".join(words[start:start + k])


def _pick_text(rng: np.random.Generator, lang: str, split: str) -> str:
    if split == "train" and lang == "en" and rng.random() < 0.5:
        pool = english_text()
        return pool[rng.integers(len(pool))]
    if split == "train" and rng.random() < 0.25:
        return _word_run(rng, lang)
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
    a = aug_mod.sample(rng, aug)
    return UttSpec(
        language=lang, espeak_lang=espeak_lang, text=_pick_text(rng, lang, split),
        variant=variant, rate=rate, pitch=pitch, pitch_range=int(rng.integers(10, 101)),
        word_gap=int(rng.choice([0, 0, 0, 1, 2, 4])),
        # silences up to 1.2 s, so that long pauses (digital zeros or just noise) are seen
        lead_s=float(rng.uniform(0.0, 1.2) if rng.random() < 0.3 else rng.uniform(0.0, 0.3)),
        tail_s=float(rng.uniform(0.0, 1.2) if rng.random() < 0.3 else rng.uniform(0.0, 0.3)),
        aug=a,
    )


def render(spec: UttSpec, engine=None) -> tuple[np.ndarray, np.ndarray]:
    """One utterance -> (16 kHz float32 audio, int64 viseme id per 10 ms frame)."""
    engine = engine or default_engine()
    sp = engine.synthesize(spec.text, spec.espeak_lang, voice=spec.variant, rate=spec.rate,
                           pitch=spec.pitch, pitch_range=spec.pitch_range,
                           word_gap=spec.word_gap, seed=spec.aug.get("seed", 0))
    return _padded_augmented(sp.pcm, sp.sample_rate,
                             [(p.start_s, p.end_s, p.viseme) for p in sp.phonemes],
                             spec.lead_s, spec.tail_s, spec.aug)


def _padded_augmented(pcm: np.ndarray, sr: int, spans: list[tuple[float, float, str]],
                      lead_s: float, tail_s: float, aug: dict, shift_s: float = 0.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """int16 speech with (start, end, viseme) spans -> silence added before and after,
    augmented, at 16 kHz, with labels at 10 ms that follow the padding, any tempo change and
    ``shift_s`` (the source's own label-to-audio offset)."""
    lead, tail = int(lead_s * sr), int(tail_s * sr)
    x = np.concatenate([np.zeros(lead, np.float32), pcm.astype(np.float32) / 32768.0,
                        np.zeros(tail, np.float32)])
    y, k = aug_mod.augment(x, sr, aug)
    off = lead / sr + shift_s
    phs = [TimedPhoneme("", (a + off) * k, (b + off) * k, v) for a, b, v in spans]
    return y, viseme_ids_from_phonemes(phs, len(y) / SAMPLE_RATE, FRAME_RATE)


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


def _write(out: Path, name: str, items, meta: dict) -> Path:
    """Save ``{name}.npz``: feats (T, 80) float16 log-mel, labels (T,) int8, offsets (U+1,) per
    utterance; and ``{name}.json``: ``meta`` + each utterance's spec."""
    out.mkdir(parents=True, exist_ok=True)
    feats, labels, offsets, specs = [], [], [0], []
    for spec, x, lab in items:
        f = logmel(x)
        n = min(len(f), len(lab))
        feats.append(f[:n].astype(np.float16))
        labels.append(lab[:n].astype(np.int8))
        offsets.append(offsets[-1] + n)
        specs.append(spec)
    path = out / f"{name}.npz"
    np.savez(path, feats=np.concatenate(feats), labels=np.concatenate(labels),
             offsets=np.asarray(offsets, np.int64))
    (out / f"{name}.json").write_text(json.dumps({**meta, "version": DATA_VERSION,
                                                  "utterances": specs}, ensure_ascii=False))
    log.info("corpus_written", split=name, path=str(path), utterances=len(specs),
             frames=int(offsets[-1]))
    return path


def build(out: Path, split: str, hours: float, seed: int, aug: AugmentConfig | None = None,
          progress: bool = True) -> Path:
    """Synthesise an espeak-ng split into ``{split}.npz`` / ``{split}.json``."""
    items = ((asdict(spec), x, lab) for spec, x, lab in
             iter_split(split, hours * 3600, seed, aug, progress))
    return _write(out, split, items, {"seed": seed, "hours": hours})


KOKORO_SPLITS = ("kokoro_train", "kokoro_val")
KOKORO_LABELS = 3  # bump when Kokoro's labels change (3: the graph's 50 ms lead taken out)


def _augment_kokoro(job: tuple) -> tuple[dict, np.ndarray, np.ndarray]:
    """One augmented copy of one cached Kokoro utterance (runs in a worker process)."""
    from avatar_pipeline.visemes import kokoro_data

    spec, pcm, phs, seed, split, c, aug = job
    rng = np.random.default_rng([seed, 100 + KOKORO_SPLITS.index(split), spec["index"], c])
    a = aug_mod.sample(rng, aug)
    y, k = aug_mod.augment(pcm.astype(np.float32) / 32768.0, kokoro_data.SAMPLE_RATE, a)
    tp = [TimedPhoneme("", s0 * k, s1 * k, VISEMES[v]) for s0, s1, v in phs]
    labels = viseme_ids_from_phonemes(tp, len(y) / SAMPLE_RATE, FRAME_RATE)
    return {**spec, "copy": c, "aug": a}, y, labels


def iter_kokoro(paths: list[Path], split: str, seed: int, copies: int,
                aug: AugmentConfig | None = None, progress: bool = True, workers: int = 1):
    """Cached Kokoro utterances, ``copies`` augmented versions of each -> (spec, audio16k,
    labels), in order and deterministic from (seed, split, utterance, copy) whatever
    ``workers`` is."""
    import multiprocessing as mp

    from tqdm import tqdm

    from avatar_pipeline.visemes import kokoro_data

    aug = aug if aug is not None else AugmentConfig()
    jobs = [(spec, pcm, phs, seed, split, c, aug)
            for spec, pcm, phs in kokoro_data.load(paths) for c in range(copies)]
    bar = tqdm(total=len(jobs), desc=f"augment {split}", disable=not progress, mininterval=5)
    if workers <= 1:
        for j in jobs:
            bar.update()
            yield _augment_kokoro(j)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for item in pool.imap(_augment_kokoro, jobs, chunksize=4):
                bar.update()
                yield item
    bar.close()


def build_kokoro(out: Path, split: str, hours: float, seed: int, copies: int = 2,
                 workers: int = 2, progress: bool = True) -> Path:
    """Kokoro speech (generated once into ``out/kokoro``, reused) -> ``{split}.npz``."""
    from avatar_pipeline.visemes import kokoro_data

    raw = split.removeprefix("kokoro_")
    paths = kokoro_data.generate(out, raw, hours, seed, workers, progress)
    return _write(out, split, iter_kokoro(paths, split, seed, copies, progress=progress,
                                          workers=workers),
                  {"seed": seed, "hours": hours, "copies": copies, "labels": KOKORO_LABELS})


FESTIVAL_SPLITS = ("festival_train", "festival_val")
# The voices of real people in these splits: festival's three and flite's two (the shipped
# model's recipe; ``--no-flite`` leaves flite's out).
FESTIVAL_VOICES: tuple[str, ...] = tuple(sorted(festival.VOICES))
RECORDED_VOICES: tuple[str, ...] = (*FESTIVAL_VOICES, *flite.VOICES)
# Festival's labels run ahead of its audio by about a pitch period (sibilant energy centres
# against label centres, relative to espeak-ng's); the labels are moved by this much. Flite's
# clustergen voices sit where espeak-ng's do.
FESTIVAL_LAG_S: dict[str, float] = {"kal": 0.005, "ked": 0.0, "slt": 0.010, "awb": 0.0,
                                    "rms": 0.0}
FESTIVAL_LABELS = 1  # bump when festival's labels change


def recorded_speech(requests: list[festival.FestivalRequest]) -> list:
    """Speak each request with festival or flite, whichever has its voice; in order."""
    fest = [r for r in requests if r.voice in festival.VOICES]
    spoken = iter(festival.synthesize_batch(fest) if fest else [])
    return [next(spoken) if r.voice in festival.VOICES else flite.synthesize(r)
            for r in requests]


def _festival_text(rng: np.random.Generator, split: str) -> str:
    if split == "festival_train":
        if rng.random() < 0.2:
            return _word_run(rng, "en")
        pool = english_text()
        return pool[rng.integers(len(pool))]
    pool = [s for s in sentences() if s.language == "en" and s.heldout]
    return pool[rng.integers(len(pool))].text


def _augment_festival(job: tuple) -> tuple[dict, np.ndarray, np.ndarray]:
    """One augmented festival utterance (runs in a worker process)."""
    spec, pcm, sr, phs, seed, split = job
    rng = np.random.default_rng([seed, 200 + FESTIVAL_SPLITS.index(split), spec["index"]])
    a = aug_mod.sample(rng, AugmentConfig())
    y, labels = _padded_augmented(pcm, sr, [(s0, s1, VISEMES[v]) for s0, s1, v in phs],
                                  spec["lead_s"], spec["tail_s"], a,
                                  FESTIVAL_LAG_S[spec["voice"]])
    return {**spec, "aug": a}, y, labels


def iter_festival(split: str, seconds: float, seed: int, progress: bool = True,
                  workers: int = 1, batch: int = 64,
                  voices: tuple[str, ...] = FESTIVAL_VOICES):
    """Festival (and flite) speech by ``voices`` (rate 0.75-1.4x), augmented -> (spec, audio16k,
    labels) until ``seconds`` of speech are made; deterministic from (seed, split, voices)."""
    import multiprocessing as mp

    from tqdm import tqdm

    rng = np.random.default_rng([seed, 300 + FESTIVAL_SPLITS.index(split)])
    unknown = set(voices) - set(RECORDED_VOICES)
    if unknown:
        raise ValueError(f"unknown recorded voices {sorted(unknown)}; of {list(RECORDED_VOICES)}")
    done, index = 0.0, 0
    bar = tqdm(total=round(seconds), unit="s", desc=f"festival {split}", disable=not progress,
               mininterval=5)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        while done < seconds:
            specs = []
            for _ in range(batch):
                specs.append({
                    "index": index, "voice": voices[rng.integers(len(voices))],
                    "stretch": float(rng.uniform(0.75, 1.4)), "text": _festival_text(rng, split),
                    "lead_s": float(rng.uniform(0.0, 1.0) if rng.random() < 0.3
                                    else rng.uniform(0.0, 0.3)),
                    "tail_s": float(rng.uniform(0.0, 0.3)),
                })
                index += 1
            speech = recorded_speech(
                [festival.FestivalRequest(s["text"], s["voice"], s["stretch"]) for s in specs])
            jobs = [(spec, sp.pcm, sp.sample_rate,
                     [(p.start_s, p.end_s, VISEMES.index(p.viseme)) for p in sp.phonemes],
                     seed, split) for spec, sp in zip(specs, speech, strict=True)]
            items = pool.imap(_augment_festival, jobs, chunksize=4) if pool else \
                map(_augment_festival, jobs)
            for item in items:
                done += len(item[1]) / SAMPLE_RATE
                bar.update(max(0, min(round(done), round(seconds)) - bar.n))
                yield item
                if done >= seconds:
                    break
    finally:
        if pool:
            pool.terminate()
        bar.close()


def build_festival(out: Path, split: str, hours: float, seed: int, workers: int = 2,
                   progress: bool = True, voices: tuple[str, ...] = FESTIVAL_VOICES) -> Path:
    """Festival speech -> ``{split}.npz`` (fast: festival speaks ~50x faster than real time)."""
    return _write(out, split, iter_festival(split, hours * 3600, seed, progress, workers,
                                            voices=voices),
                  {"seed": seed, "hours": hours, "labels": FESTIVAL_LABELS,
                   "voices": list(voices)})


def recorded_voices(with_flite: bool) -> tuple[str, ...]:
    return RECORDED_VOICES if with_flite else FESTIVAL_VOICES


def main(argv: list[str] | None = None) -> None:
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--hours", type=float, default=1.0, help="hours of espeak-ng training audio")
    ap.add_argument("--kokoro-hours", type=float, default=0.0,
                    help="hours of Kokoro training speech (generated once, cached)")
    ap.add_argument("--copies", type=int, default=2, help="augmented copies per Kokoro utterance")
    ap.add_argument("--festival-hours", type=float, default=0.0,
                    help="hours of festival training speech (needs Debian's festival voices)")
    ap.add_argument("--flite", action=argparse.BooleanOptionalAction, default=True,
                    help="flite's voices awb and rms beside festival's (needs flite)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=[*SPLITS, *KOKORO_SPLITS, *FESTIVAL_SPLITS, "all"],
                    default="all")
    ap.add_argument("--eval-hours", type=float, default=0.1, help="hours per non-train split")
    ap.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                    help="processes generating Kokoro speech")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    splits = [*SPLITS, *(KOKORO_SPLITS if args.kokoro_hours else ()),
              *(FESTIVAL_SPLITS if args.festival_hours else ())] \
        if args.split == "all" else [args.split]
    for s in splits:
        if s in FESTIVAL_SPLITS:
            hours = args.festival_hours if s == "festival_train" else args.eval_hours / 2
            build_festival(args.out, s, hours, args.seed, args.workers,
                           voices=recorded_voices(args.flite))
        elif s in KOKORO_SPLITS:
            hours = args.kokoro_hours if s == "kokoro_train" else args.eval_hours / 2
            build_kokoro(args.out, s, hours, args.seed, args.copies, args.workers)
        else:
            build(args.out, s, args.hours if s == "train" else args.eval_hours, args.seed)
    log.info("corpus_done", seconds=round(time.time() - t0), out=str(args.out))


if __name__ == "__main__":
    main()
