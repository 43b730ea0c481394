"""Checks that a TTS engine's phoneme labels follow its audio, shared by the engines' tests."""

from __future__ import annotations

import numpy as np
import pytest


def _frame_db(pcm: np.ndarray, sr: int, a: float, b: float) -> float:
    x = pcm[int(a * sr):int(b * sr)].astype(np.float64) / 32768
    return 10 * np.log10(np.mean(x ** 2) + 1e-12) if len(x) else -120.0


def check_timing(sp, min_phones: int) -> None:
    """Intervals cover the audio exactly, in order; speech is loud where phones are and quiet
    in the pauses the graph put around the sentence."""
    phs = sp.phonemes
    assert phs[0].start_s == 0 and abs(phs[-1].end_s - sp.duration_s) < 1e-6
    for a, b in zip(phs, phs[1:], strict=False):
        assert a.end_s == pytest.approx(b.start_s) and a.start_s < a.end_s
    spoken = [p for p in phs if p.viseme != "sil"]
    assert len(spoken) >= min_phones
    loud = np.median([_frame_db(sp.pcm, sp.sample_rate, p.start_s, p.end_s)
                      for p in spoken if p.viseme in ("aa", "E", "oh")])
    lead = _frame_db(sp.pcm, sp.sample_rate, 0, phs[0].end_s * 0.8)
    assert phs[0].viseme == "sil" and lead < loud - 25, (lead, loud)


def sibilant_offsets_ms(sp, lag_s: float = 0.0) -> list[float]:
    """For each /s/-like span (moved ``lag_s`` later): centre of its high-frequency energy minus
    the span's centre."""
    from scipy.signal import butter, sosfiltfilt

    x = sp.pcm.astype(np.float64) / 32768
    sr = sp.sample_rate
    hf = sosfiltfilt(butter(6, 4000, "highpass", fs=sr, output="sos"), x) ** 2
    lf = sosfiltfilt(butter(6, 1500, "lowpass", fs=sr, output="sos"), x) ** 2
    hop = sr // 1000
    n = len(x) // hop
    h = hf[:n * hop].reshape(n, hop).mean(1)
    ratio = h / (h + lf[:n * hop].reshape(n, hop).mean(1) + 1e-9)
    out = []
    for p in sp.phonemes:
        c = (p.start_s + p.end_s) / 2 + lag_s
        a, b = int((c - 0.12) * 1000), int((c + 0.12) * 1000)
        if p.viseme != "SS" or p.end_s - p.start_s < 0.05 or a < 0 or b >= n:
            continue
        w = np.clip(ratio[a:b] - np.median(ratio), 0, None)
        if w.sum() > 0:
            out.append(1000 * ((a + np.sum(np.arange(len(w)) * w) / w.sum()) / 1000 - c))
    return out
