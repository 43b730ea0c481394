"""The TTS data types: speech audio with exactly timed phonemes, and the engine protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX


@dataclass
class TimedPhoneme:
    phoneme: str
    start_s: float
    end_s: float
    viseme: str


@dataclass
class Speech:
    pcm: np.ndarray  # int16 mono
    sample_rate: int
    phonemes: list[TimedPhoneme]
    text: str
    language: str
    voice: str = field(default="")

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate if self.sample_rate else 0.0

    def viseme_ids(self, fps: float) -> np.ndarray:
        """The hard viseme id per frame: frame ``i`` covers ``[i/fps, (i+1)/fps)`` and takes the
        viseme that covers most of it (ties: the earlier one). ``n = ceil(duration*fps)``."""
        return viseme_ids_from_phonemes(self.phonemes, self.duration_s, fps)

    def viseme_track(self, fps: int) -> np.ndarray:
        """(n_frames, 15) float32: each row is the share of the frame period each viseme covers
        (exact, from the phoneme events), so rows sum to 1. ``n_frames = ceil(duration*fps)``."""
        return viseme_track_from_phonemes(self.phonemes, self.duration_s, fps)


def _n_frames(duration_s: float, fps: float) -> int:
    # round first so that float noise (e.g. 2.0000000001 s) does not add a frame
    return int(math.ceil(round(duration_s * fps, 6)))


def viseme_track_from_phonemes(phonemes: list[TimedPhoneme], duration_s: float,
                               fps: float) -> np.ndarray:
    if fps <= 0:
        raise ValueError("fps must be > 0")
    n = _n_frames(duration_s, fps)
    track = np.zeros((n, NUM_VISEMES), np.float64)
    covered = np.zeros(n, np.float64)
    for p in phonemes:
        if p.end_s <= p.start_s:
            continue
        v = VISEME_INDEX[p.viseme]
        a, b = p.start_s * fps, p.end_s * fps
        i0, i1 = int(math.floor(a)), min(int(math.ceil(b)), n)
        for i in range(max(i0, 0), i1):
            overlap = min(b, i + 1) - max(a, i)
            if overlap > 0:
                track[i, v] += overlap
                covered[i] += overlap
    # the part of each frame (inside the audio) that no phoneme covers is silence
    frame_len = np.clip(duration_s * fps - np.arange(n), 0.0, 1.0)
    track[:, VISEME_INDEX["sil"]] += np.clip(frame_len - covered, 0.0, None)
    sums = track.sum(axis=1, keepdims=True)
    sums[sums == 0] = 1.0
    track /= sums
    return track.astype(np.float32)


def viseme_ids_from_phonemes(phonemes: list[TimedPhoneme], duration_s: float,
                             fps: float) -> np.ndarray:
    return np.argmax(viseme_track_from_phonemes(phonemes, duration_s, fps), axis=1).astype(np.int64)


class TTSEngine(Protocol):
    sample_rate: int

    def synthesize(self, text: str, language: str = "en", voice: str | None = None,
                   rate: int | None = None, pitch: int | None = None) -> Speech: ...
