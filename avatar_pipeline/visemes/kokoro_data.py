"""Kokoro speech for the viseme corpus: neural voices with exact labels, generated once, cached.

    python -m avatar_pipeline.visemes.kokoro_data --out DIR --hours 1.5 [--workers 2]

Kokoro is slow on a CPU (real-time factor ~1 per core here), so its clean speech is made once
and cached in shards under ``DIR/kokoro`` (outside git); the corpus builder
(``avatar_pipeline.visemes.data``) augments it afresh. Generation is resumable (finished
shards are kept) and deterministic: utterance ``i`` of a split depends only on
``(seed, split, i)``, so any number of workers makes the same shards.

Splits:

- ``train``: training speakers (``speakers.sample(.., "train")``), training text: English from
  ``data/en_text.txt`` and our training sentences, other languages from their training
  sentences and word lists.
- ``val``: training speakers, the held-out sentences of ``data/sentences.txt`` (model
  selection while training).
- ``heldout``: held-out speakers (``speakers``: mixes dominated by a pack no training speaker
  uses), the evaluation sentences (``data/eval_sentences.txt``) in English and the held-out
  sentences of the other languages. Evaluation only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avatar_pipeline.tts.kokoro import SAMPLE_RATE
from avatar_pipeline.viseme_set import VISEME_INDEX
from avatar_pipeline.visemes import speakers
from avatar_pipeline.visemes.corpus import english_text, eval_sentences, sentences, word_lists
from config.logs import get_logger

log = get_logger(__name__)

SPLITS = ("train", "val", "heldout")
# English dominates (voice agents), then the product's other languages Kokoro speaks
LANG_WEIGHTS: dict[str, float] = {
    "en": 0.5, "es": 0.12, "zh": 0.1, "fr": 0.06, "it": 0.06, "pt": 0.06, "hi": 0.05, "ja": 0.05,
}
SHARD = 20  # utterances per cached file
KOKORO_VERSION = 1  # bump when generation changes (old shards are then ignored)


@dataclass
class KokoroSpec:
    split: str
    index: int
    language: str
    text: str
    speaker: speakers.Speaker
    speed: float


def _text(rng: np.random.Generator, lang: str, split: str) -> str:
    if split == "heldout" and lang == "en":
        pool = list(eval_sentences())
        return pool[rng.integers(len(pool))]
    if split != "train":
        pool = [s.text for s in sentences() if s.language == lang and s.heldout]
        return pool[rng.integers(len(pool))]
    if lang == "en" and rng.random() < 0.8:
        pool = list(english_text())
        return pool[rng.integers(len(pool))]
    words = [w for w in word_lists() if w.language == lang]
    if words and rng.random() < 0.2:
        ws = words[rng.integers(len(words))].text.split()
        k = int(rng.integers(3, 8))
        start = int(rng.integers(0, max(1, len(ws) - k)))
        return " ".join(ws[start:start + k])
    pool = [s.text for s in sentences() if s.language == lang and not s.heldout]
    return pool[rng.integers(len(pool))]


def spec(split: str, index: int, seed: int) -> KokoroSpec:
    rng = np.random.default_rng([seed, SPLITS.index(split), index, KOKORO_VERSION])
    langs = list(LANG_WEIGHTS)
    p = np.array([LANG_WEIGHTS[x] for x in langs])
    lang = langs[rng.choice(len(langs), p=p / p.sum())]
    text = _text(rng, lang, split)
    if split == "train" and rng.random() < 0.25:  # two sentences: a pause inside
        text = f"{text} {_text(rng, lang, split)}"
    spk = speakers.sample(rng, "heldout" if split == "heldout" else "train")
    speed = float(np.exp(rng.uniform(np.log(0.8), np.log(1.3))))
    return KokoroSpec(split, index, lang, text, spk, speed)


# --- generation (one engine per worker process) -------------------------------------------

_ENGINE = None


def _init_worker() -> None:
    global _ENGINE
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from avatar_pipeline.tts.kokoro import KokoroEngine

    _ENGINE = KokoroEngine(threads=1)


def render(s: KokoroSpec, engine=None):
    """One utterance -> (int16 audio at 24 kHz, [(start_s, end_s, viseme id)]) with the
    graph's own durations (the cache keeps them as they are; ``load`` refines them)."""
    from avatar_pipeline.tts.kokoro import base_styles

    engine = engine or _ENGINE
    style = s.speaker.style(base_styles(), speakers.names(
        "heldout" if s.split == "heldout" else "train"))
    sp = engine.synthesize(s.text, s.language, voice=style, speed=s.speed, refine=False)
    return sp.pcm, [(p.start_s, p.end_s, VISEME_INDEX[p.viseme]) for p in sp.phonemes]


def shard_path(out: Path, split: str, seed: int, shard: int) -> Path:
    return out / "kokoro" / f"{split}-s{seed}-v{KOKORO_VERSION}-{shard:05d}.npz"


def _make_shard(args: tuple[str, str, int, int]) -> tuple[int, float]:
    out, split, seed, shard = args
    path = shard_path(Path(out), split, seed, shard)
    if path.exists():
        return shard, float(np.load(path)["offsets"][-1]) / SAMPLE_RATE
    audio, offsets, ph, ph_off, specs = [], [0], [], [0], []
    for i in range(shard * SHARD, (shard + 1) * SHARD):
        s = spec(split, i, seed)
        try:
            pcm, phs = render(s)
        except (KeyError, ValueError) as e:  # a symbol no map knows: skip, never guess
            log.warning("kokoro_utterance_skipped", index=i, language=s.language,
                        error=str(e))
            continue
        audio.append(pcm)
        offsets.append(offsets[-1] + len(pcm))
        ph.extend(phs)
        ph_off.append(len(ph))
        specs.append(asdict(s))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    arr = np.asarray(ph, np.float64).reshape(-1, 3)
    np.savez(tmp, audio=np.concatenate(audio) if audio else np.zeros(0, np.int16),
             offsets=np.asarray(offsets, np.int64), ph_start=arr[:, 0], ph_end=arr[:, 1],
             ph_vis=arr[:, 2].astype(np.int8), ph_offsets=np.asarray(ph_off, np.int64),
             specs=np.array(json.dumps(specs, ensure_ascii=False)))
    tmp.replace(path)
    return shard, offsets[-1] / SAMPLE_RATE


def generate(out: Path, split: str, hours: float, seed: int, workers: int = 2,
             progress: bool = True) -> list[Path]:
    """Make (or reuse) the shards of ``split`` until they hold ``hours`` of speech; returns
    the shard paths (the smallest prefix of shards that does)."""
    from tqdm import tqdm

    target = hours * 3600
    t0 = time.time()
    done, paths = 0.0, []
    jobs = ((str(out), split, seed, k) for k in range(10 ** 6))
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool, \
            tqdm(total=round(target), unit="s", desc=f"kokoro {split}", disable=not progress,
                 mininterval=5) as bar:
        for shard, secs in pool.imap(_make_shard, jobs):
            done += secs
            paths.append(shard_path(out, split, seed, shard))
            bar.update(min(round(done), round(target)) - bar.n)
            if done >= target:
                pool.terminate()  # shards in flight are not needed (and not half-written)
                break
    for tmp in (out / "kokoro").glob("*.tmp*.npz"):  # what terminated workers left half-written
        tmp.unlink(missing_ok=True)
    log.info("kokoro_split_ready", split=split, shards=len(paths), seconds=round(done),
             wall_seconds=round(time.time() - t0))
    return paths


def load(paths: list[Path], refine: bool = True):
    """Yield (spec dict, int16 audio at 24 kHz, [(start_s, end_s, viseme id)]) per utterance;
    ``refine``: the timing of the audio (``tts.kokoro.audio_timing``)."""
    from avatar_pipeline.tts.kokoro import audio_timing
    from avatar_pipeline.tts.types import TimedPhoneme
    from avatar_pipeline.viseme_set import VISEMES

    for p in paths:
        d = np.load(p)
        specs = json.loads(str(d["specs"]))
        off, poff = d["offsets"], d["ph_offsets"]
        for k, s in enumerate(specs):
            phs = list(zip(d["ph_start"][poff[k]:poff[k + 1]].tolist(),
                           d["ph_end"][poff[k]:poff[k + 1]].tolist(),
                           d["ph_vis"][poff[k]:poff[k + 1]].tolist(), strict=True))
            pcm = d["audio"][off[k]:off[k + 1]]
            if refine:
                tp = audio_timing([TimedPhoneme("", a, b, VISEMES[v]) for a, b, v in phs], pcm)
                phs = [(p.start_s, p.end_s, VISEME_INDEX[p.viseme]) for p in tp]
            yield s, pcm, phs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate (or reuse) the Kokoro speech cache")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--hours", type=float, default=1.5, help="hours of training speech")
    ap.add_argument("--eval-hours", type=float, default=0.05, help="hours for val")
    ap.add_argument("--heldout-hours", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    args = ap.parse_args(argv)
    hours = {"train": args.hours, "val": args.eval_hours, "heldout": args.heldout_hours}
    for s in SPLITS if args.split == "all" else (args.split,):
        generate(args.out, s, hours[s], args.seed, args.workers)


if __name__ == "__main__":
    main()
