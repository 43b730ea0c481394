"""Wav2Lip's audio features, computed as Wav2Lip's own ``audio.py`` computes them, so that users'
Wav2Lip weights hear what they were trained on (a mel made any other way shifts every input).

Wav2Lip's ``hparams``: 16 kHz; pre-emphasis 0.97 (``lfilter([1, -0.97], [1])``); STFT with
n_fft 800, hop 200, win 800, a periodic Hann window, centred with reflect padding (its pinned
librosa 0.7); magnitude (not power) through librosa's Slaney mel filterbank with area
normalisation (80 bands, 55-7600 Hz); ``20 log10(max(1e-5, x)) - 20`` dB, normalised to
``[-4, 4]``: ``clip(8 (S + 100) / 100 - 4)``. For video frame ``i`` at ``fps`` the window is the
16 mel steps from ``int(i * 80 / fps)``; one that would run past the end is the last 16 steps.
Audio at another rate is resampled with libsoxr's high quality (what librosa's ``load`` uses).
All numpy (no librosa at run time); tests/pipeline/test_neural.py checks it against librosa.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT, HOP, WIN = 800, 200, 800
N_MELS, FMIN, FMAX = 80, 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = -100.0, 20.0, 4.0
MEL_STEPS = 16  # mel steps per video frame's window
STEPS_PER_S = SAMPLE_RATE / HOP  # 80


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@cache
def mel_basis() -> np.ndarray:
    """(80, 401) Slaney filterbank, area-normalised (librosa.filters.mel's defaults)."""
    fft_hz = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    weights = np.zeros((N_MELS, len(fft_hz)))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:N_MELS + 2] - mel_hz[:N_MELS]))[:, None]
    return weights.astype(np.float32)


def to_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """int16 (or float) mono -> float32 in [-1, 1] at 16 kHz."""
    x = np.asarray(pcm)
    x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
    if sample_rate == SAMPLE_RATE:
        return x
    import soxr

    return soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def melspectrogram(wav16k: np.ndarray) -> np.ndarray:
    """(80, steps) float32 in [-4, 4]: Wav2Lip's ``audio.melspectrogram``."""
    y = preemphasis(wav16k)
    pad = N_FFT // 2
    mode = "reflect" if len(y) > pad else "constant"
    return mel_columns(np.pad(y, pad, mode=mode))


def preemphasis(x: np.ndarray, prev: float = 0.0) -> np.ndarray:
    """``y[n] = x[n] - 0.97 x[n-1]`` (float64), ``prev`` being the sample before ``x[0]``
    (0 at the start of a signal, as ``lfilter`` starts)."""
    x = np.asarray(x, np.float64)
    y = np.empty_like(x)
    if len(x):
        y[0] = x[0] - PREEMPHASIS * prev
        y[1:] = x[1:] - PREEMPHASIS * x[:-1]
    return y


_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic Hann


def mel_columns(padded: np.ndarray) -> np.ndarray:
    """(80, steps) float32 in [-4, 4] for pre-emphasised samples already padded by
    ``N_FFT // 2`` at the start: step ``s`` is the STFT window ``padded[s*HOP : s*HOP+N_FFT]``."""
    steps = max(0, 1 + (len(padded) - N_FFT) // HOP)
    if steps == 0:
        return np.zeros((N_MELS, 0), np.float32)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(steps)[:, None]
    mag = np.abs(np.fft.rfft(padded[idx] * _WINDOW[None, :], axis=1))  # (steps, 401)
    mel = mel_basis().astype(np.float64) @ mag.T
    db = 20 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    norm = 2 * MAX_ABS * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(norm, -MAX_ABS, MAX_ABS).astype(np.float32)


def window_start(frame: int, fps: int) -> int:
    """The first mel step of video frame ``frame``'s window (Wav2Lip's ``int(80 * i / fps)``)."""
    return int(frame * STEPS_PER_S / fps)


SILENT_WINDOW = np.full((1, N_MELS, MEL_STEPS), -MAX_ABS, np.float32)
"""The window of silence (every bin at the dB floor)."""


def mel_windows(pcm: np.ndarray, sample_rate: int, fps: int) -> np.ndarray:
    """For each video frame of ``pcm`` at ``fps`` (``ceil(duration * fps)`` frames), Wav2Lip's
    16-step mel window: (n_frames, 1, 80, 16) float32."""
    wav = to_16k(pcm, sample_rate)
    mel = melspectrogram(wav)
    if mel.shape[1] < MEL_STEPS:
        mel = np.pad(mel, ((0, 0), (0, MEL_STEPS - mel.shape[1])), constant_values=-MAX_ABS)
    n_frames = int(math.ceil(round(len(wav) / SAMPLE_RATE * fps, 6)))
    out = np.empty((n_frames, 1, N_MELS, MEL_STEPS), np.float32)
    last = mel.shape[1] - MEL_STEPS
    for i in range(n_frames):
        s = min(window_start(i, fps), last)
        out[i, 0] = mel[:, s:s + MEL_STEPS]
    return out
