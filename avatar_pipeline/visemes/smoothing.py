"""Smoothing / coarticulation of viseme weights, a separate step after the model (or the exact
TTS track): blend of the top visemes, minimum hold of the dominant viseme, then per-viseme
attack/release envelopes. Works frame by frame (``Smoother.step``) or on a whole track
(``smooth_track``); both give the same numbers.

One setting for every path that draws a mouth (``SmoothingParams()``: the worker and
``avatar render`` use the same), applied the same way in both:

- audio from a voice agent or a recording: causally, frame by frame as the model emits them
  (``StreamingVisemes(smoothing=...)``);
- a track whose every frame is known beforehand (our TTS): forward and backward
  (``smooth_known_track``), so coarticulation costs no lag (a causal smoother alone put the
  mouth ~35 ms behind the audio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatar_pipeline.viseme_set import NUM_VISEMES


@dataclass(frozen=True)
class SmoothingParams:
    # Measured in the worker: these keep coarticulation and stay within +-20 ms of the audio;
    # 30/70/60 ms put the mouth 25 ms behind it.
    fps: float = 25.0
    attack_ms: float = 20.0  # time constant while a weight rises
    release_ms: float = 60.0  # time constant while a weight falls (mouths close slower)
    min_hold_ms: float = 40.0  # a new dominant viseme must wait this long after the last change
    top_k: int = 2  # blend only the k strongest visemes (coarticulation), drop the rest

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.attack_ms < 0 or self.release_ms < 0 or self.min_hold_ms < 0:
            raise ValueError("fps must be > 0 and times >= 0")
        if not 1 <= self.top_k <= NUM_VISEMES:
            raise ValueError(f"top_k must be in [1, {NUM_VISEMES}]")

    def coeff(self, tau_ms: float) -> float:
        """Per-frame step toward the target for an exponential with time constant tau."""
        if tau_ms <= 0:
            return 1.0
        return 1.0 - math.exp(-(1000.0 / self.fps) / tau_ms)

    @property
    def hold_frames(self) -> int:
        return int(math.ceil(self.min_hold_ms * self.fps / 1000.0 - 1e-9))


def top_k_blend(w: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest weights of a row (ties: lower index first), renormalised to sum 1."""
    w = np.nan_to_num(np.asarray(w, np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(0.0)
    if w.sum() <= 0:
        out = np.zeros(NUM_VISEMES)
        out[0] = 1.0
        return out
    keep = np.argsort(-w, kind="stable")[:k]
    out = np.zeros_like(w)
    out[keep] = w[keep]
    return out / out.sum()


class Smoother:
    """Stateful per-stream smoother; ``step(row) -> row`` (15 weights summing to 1)."""

    def __init__(self, params: SmoothingParams | None = None) -> None:
        self.p = params or SmoothingParams()
        self._a = self.p.coeff(self.p.attack_ms)
        self._r = self.p.coeff(self.p.release_ms)
        self.reset()

    def reset(self) -> None:
        self._cur = np.zeros(NUM_VISEMES)
        self._cur[0] = 1.0  # start closed (sil)
        self._target = self._cur.copy()
        self._dominant = 0
        self._since_change = 10 ** 9

    def step(self, row: np.ndarray) -> np.ndarray:
        target = top_k_blend(row, self.p.top_k)
        dom = int(np.argmax(target))
        self._since_change += 1
        if dom != self._dominant:
            if self._since_change >= self.p.hold_frames:
                self._dominant, self._since_change = dom, 0
                self._target = target
            # else: keep the previous target (minimum hold)
        else:
            self._target = target
        diff = self._target - self._cur
        self._cur = self._cur + np.where(diff > 0, self._a, self._r) * diff
        s = self._cur.sum()
        return (self._cur / s if s > 0 else self._cur).astype(np.float32)

    def process(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != NUM_VISEMES:
            raise ValueError(f"expected (n, {NUM_VISEMES}) weights, got {rows.shape}")
        out = np.zeros((len(rows), NUM_VISEMES), np.float32)
        for i, r in enumerate(rows):
            out[i] = self.step(r)
        return out


def smooth_track(track: np.ndarray, params: SmoothingParams | None = None) -> np.ndarray:
    """Smooth a whole (n, 15) track from the start (same as feeding ``Smoother`` row by row)."""
    return Smoother(params).process(track)


def smooth_known_track(track: np.ndarray, params: SmoothingParams | None = None) -> np.ndarray:
    """Smooth a track known in full (TTS): forward, then backward over the result, so the
    envelopes add no lag."""
    p = params or SmoothingParams()
    track = np.asarray(track, np.float32)
    if len(track) == 0:
        return track.copy()
    return smooth_track(smooth_track(track, p)[::-1], p)[::-1].copy()
