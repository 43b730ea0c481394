"""Kokoro speakers for the viseme corpus: new voices from mixes of the shipped style packs.

Kokoro ships five Japanese style packs (four female, one male). A speaker here is a point in
style space: a random convex mix of the packs, pushed away from their centre (``spread``) and
jittered along the directions in which the packs differ (``jitter``), with the timbre half
(dimensions 0-127, the decoder) and the prosody half (128-255, durations and pitch) mixed
independently. Training speakers come from four packs; ``jf_tebukuro`` is held out, and the
held-out speakers are mixes dominated by it (>= 60 %), so that they lie outside the region the
training speakers cover, and are made from a separate random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HELDOUT_PACK = "jf_tebukuro"


@dataclass(frozen=True)
class Speaker:
    timbre: tuple[float, ...]  # weights over the packs (sum 1 before spreading)
    prosody: tuple[float, ...]
    spread: float  # 1 = the mix itself; > 1 pushes it away from the packs' mean
    jitter: float  # scale of the random offset, in units of the packs' per-dimension spread
    seed: int

    def style(self, packs: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
        """The (510, 256) style pack of this speaker."""
        stack = np.stack([packs[n] for n in names])  # (P, 510, 256)
        mean = stack.mean(axis=0)
        sd = stack.std(axis=0) + 1e-6
        out = np.empty_like(mean)
        for half, w in ((slice(0, 128), self.timbre), (slice(128, 256), self.prosody)):
            mix = np.tensordot(np.asarray(w, np.float32), stack[:, :, half], axes=1)
            out[:, half] = mean[:, half] + self.spread * (mix - mean[:, half])
        rng = np.random.default_rng(self.seed)
        # one offset per speaker, the same at every input length
        out += self.jitter * sd * rng.standard_normal(256).astype(np.float32)[None, :]
        return out.astype(np.float32)


def names(split: str) -> tuple[str, ...]:
    from avatar_pipeline.tts.kokoro import BASE_VOICES

    if split == "heldout":
        return BASE_VOICES
    return tuple(n for n in BASE_VOICES if n != HELDOUT_PACK)


def sample(rng: np.random.Generator, split: str) -> Speaker:
    """A random speaker for ``split`` ("train" or "heldout")."""
    ns = names(split)
    if split == "heldout":
        i = ns.index(HELDOUT_PACK)

        def weights() -> np.ndarray:
            w = rng.dirichlet(np.full(len(ns), 0.7))
            w[i] = 0.0
            w *= rng.uniform(0.0, 0.4) / w.sum()  # the training packs: at most 40 %
            w[i] = 1.0 - w.sum()
            return w

        return Speaker(tuple(weights().tolist()), tuple(weights().tolist()),
                       float(rng.uniform(1.0, 1.3)), float(rng.uniform(0.0, 0.3)),
                       int(rng.integers(2**31)))
    alpha = np.full(len(ns), 0.5)
    return Speaker(tuple(rng.dirichlet(alpha).tolist()), tuple(rng.dirichlet(alpha).tolist()),
                   float(rng.uniform(1.0, 1.4)), float(rng.uniform(0.0, 0.4)),
                   int(rng.integers(2**31)))
