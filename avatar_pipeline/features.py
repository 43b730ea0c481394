"""16 kHz log-mel features (80 bins, 25 ms window, 10 ms hop), offline and incremental.

Framing is causal: feature frame ``t`` is computed from the 25 ms of audio that *ends* at
``(t + 1) * 10 ms`` (the start is zero-padded), so it describes the 10 ms frame
``[t, t+1) * 10 ms`` plus 15 ms of history and no future. The streaming extractor keeps the
last 15 ms in a ring buffer and yields exactly the frames the offline function yields.

Audio at any integer sample rate in [4 kHz, 192 kHz] is first brought to 16 kHz by a streaming
polyphase windowed-sinc resampler (also shared by offline and streaming, so they agree).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SAMPLE_RATE = 16000
HOP = 160
WIN = 400
N_FFT = 512
N_MELS = 80
FMIN = 20.0
FMAX = 7600.0
LOG_FLOOR = 1e-6
MIN_RATE = 4000
MAX_RATE = 192000


@cache
def mel_filterbank() -> np.ndarray:
    """(n_fft//2+1, 80) HTK-style triangular filters."""
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz2mel(FMIN), hz2mel(FMAX), N_MELS + 2)
    hz = mel2hz(mels)
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    fb = np.zeros((len(bins), N_MELS), np.float64)
    for m in range(N_MELS):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (bins - lo) / (c - lo)
        down = (hi - bins) / (hi - c)
        fb[:, m] = np.clip(np.minimum(up, down), 0.0, None)
    return fb.astype(np.float32)


@cache
def _window() -> np.ndarray:
    return np.hanning(WIN + 1)[:WIN].astype(np.float32)


def frames_to_logmel(frames: np.ndarray) -> np.ndarray:
    """(n, WIN) float32 -> (n, 80) float32 log-mel. Row-wise, so batching rows (of one stream's
    chunks, or of many streams at once) doesn't change them."""
    if frames.shape[0] == 0:
        return np.zeros((0, N_MELS), np.float32)
    spec = np.fft.rfft(frames * _window(), n=N_FFT, axis=1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    mel = np.einsum("nf,fm->nm", power, mel_filterbank(), optimize=False)
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 / float PCM -> float32 in [-1, 1]; NaN/Inf become 0, values are clipped."""
    a = np.asarray(pcm)
    if a.ndim == 2:  # (n, channels) or (channels, n): mix down
        a = a.mean(axis=1 if a.shape[0] >= a.shape[1] else 0)
    if a.ndim != 1:
        raise ValueError(f"pcm must be 1-D mono (or 2-D multichannel), got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return (a.astype(np.float64) / max(abs(info.min), info.max)).astype(np.float32)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"unsupported pcm dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():  # checked first: nan_to_num costs more than the check
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(a, -1.0, 1.0)


def check_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not float(sample_rate).is_integer():
        raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
    sr = int(sample_rate)
    if not MIN_RATE <= sr <= MAX_RATE:
        raise ValueError(f"sample_rate {sr} outside [{MIN_RATE}, {MAX_RATE}] Hz")
    return sr


class StreamingResampler:
    """Polyphase windowed-sinc resampler, ``sr_in`` -> 16 kHz, fed in chunks of any size.

    Output sample ``k`` sits at input position ``k * M / L`` (L/M the reduced ratio) and is the
    dot product of ``2 * HALF`` input samples around it with the filter for its phase. Each
    output is emitted once its last input sample has arrived, so the delay is ``HALF`` input
    samples (<= 1 ms at 16 kHz and above) and the output does not depend on the chunking.
    """

    HALF = 16

    def __init__(self, sr_in: int, sr_out: int = SAMPLE_RATE) -> None:
        self.sr_in = check_rate(sr_in)
        g = math.gcd(self.sr_in, sr_out)
        self.L, self.M = sr_out // g, self.sr_in // g
        self.passthrough = self.L == self.M
        self._hist = np.zeros(self.HALF, np.float32)  # left context (zeros before the start)
        self._hist_start = -self.HALF  # input index of _hist[0]
        self._k = 0  # next output index
        self._n_in = 0
        if not self.passthrough:
            self._filters = _polyphase(self.L, self.M, self.HALF)

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.passthrough:
            return x.copy()
        self._hist = np.concatenate([self._hist, x])
        self._n_in += len(x)
        return self._emit(self._n_in)

    def flush(self) -> np.ndarray:
        """Emit the outputs that wait on future input, as if zeros followed, up to the length
        that corresponds to the input (``ceil(n_in * L / M)`` in all)."""
        if self.passthrough:
            return np.zeros(0, np.float32)
        self._hist = np.concatenate([self._hist, np.zeros(self.HALF + 1, np.float32)])
        total = -(-self._n_in * self.L // self.M)
        return self._emit(self._n_in + self.HALF + 1, limit=total)

    def _emit(self, available: int, limit: int | None = None) -> np.ndarray:
        # output k needs input indices base-HALF+1 .. base+HALF, base = floor(k*M/L)
        last_ok = (available - self.HALF - 1)  # max base whose window is complete
        if last_ok < 0:
            return np.zeros(0, np.float32)
        k_end = (last_ok * self.L) // self.M + 1
        while (k_end * self.M) // self.L > last_ok:
            k_end -= 1
        k_end = max(k_end, self._k)
        if limit is not None:
            k_end = min(k_end, max(limit, self._k))
        ks = np.arange(self._k, k_end, dtype=np.int64)
        if len(ks) == 0:
            return np.zeros(0, np.float32)
        base = (ks * self.M) // self.L
        phase = (ks * self.M) % self.L
        idx = base[:, None] + np.arange(-self.HALF + 1, self.HALF + 1)[None, :] - self._hist_start
        out = (self._hist[idx] * self._filters[phase]).sum(axis=1, dtype=np.float32)
        self._k = int(k_end)
        # drop input no future output needs
        next_base = (self._k * self.M) // self.L
        keep_from = next_base - self.HALF + 1 - self._hist_start
        if keep_from > 0:
            self._hist = self._hist[keep_from:]
            self._hist_start += keep_from
        return out.astype(np.float32)


@cache
def _polyphase(L: int, M: int, half: int) -> np.ndarray:
    """(L, 2*half) filters: phase p interpolates at fractional offset p/L (Kaiser-windowed sinc,
    cutoff at the lower Nyquist, rows normalised to unit DC gain)."""
    cutoff = min(1.0, L / M) * 0.95
    taps = np.arange(-half + 1, half + 1, dtype=np.float64)  # input offsets from base
    frac = np.arange(L, dtype=np.float64) / L
    t = taps[None, :] - frac[:, None]  # distance of each tap from the output position
    beta = 8.0
    r = np.clip(t / (half + 1.0), -1.0, 1.0)
    window = np.i0(beta * np.sqrt(1.0 - r ** 2)) / np.i0(beta)
    h = cutoff * np.sinc(cutoff * t) * window
    h /= h.sum(axis=1, keepdims=True)
    return h.astype(np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Offline resampling with the streaming resampler (same numbers as streaming)."""
    r = StreamingResampler(sr_in, sr_out)
    return np.concatenate([r.push(x), r.flush()])


class StreamingLogMel:
    """Incremental log-mel over a ring buffer: ``push(samples at 16 kHz)`` -> new frames."""

    def __init__(self) -> None:
        self._buf = np.zeros(WIN - HOP, np.float32)  # the 15 ms of history (zeros at start)

    def pending_samples(self) -> int:
        """Samples buffered beyond the 15 ms of history (< one hop)."""
        return len(self._buf) - (WIN - HOP)

    def push(self, x16k: np.ndarray) -> np.ndarray:
        return frames_to_logmel(self.frames(x16k))

    def frames(self, x16k: np.ndarray) -> np.ndarray:
        """The new analysis windows, ``(n, WIN)``, before the log-mel (which a batcher runs
        over many streams' windows at once)."""
        x = np.asarray(x16k, np.float32)
        buf = np.concatenate([self._buf, x])
        n = (len(buf) - (WIN - HOP)) // HOP
        if n <= 0:
            self._buf = buf
            return np.zeros((0, WIN), np.float32)
        idx = np.arange(n)[:, None] * HOP + np.arange(WIN)[None, :]
        self._buf = buf[n * HOP:]
        return buf[idx]


def logmel(x16k: np.ndarray) -> np.ndarray:
    """Offline log-mel of 16 kHz float audio: ``floor(len/160)`` frames (a trailing partial hop
    is dropped; pad the audio to keep it)."""
    return StreamingLogMel().push(x16k)


def frame_log_power(feats: np.ndarray) -> np.ndarray:
    """Each log-mel frame's total power, in nats (log of the summed mel energies)."""
    f = np.asarray(feats, np.float64)
    if len(f) == 0:
        return np.zeros(0)
    m = f.max(axis=1)
    return m + np.log(np.exp(f - m[:, None]).sum(axis=1))


# --- speaker- and channel-independent features: causal running mean normalisation ---------

class RunningNorm:
    """Causal per-stream mean normalisation of log-mel (cepstral mean normalisation, run
    forward in time): ``out_t = x_t - m_t`` with

        m_t = S_t / W_t,  S_t = lam * S_{t-1} + w_t * x_t,  W_t = lam * W_{t-1} + w_t,
        lam = 1 - 1 / tau,  S_0 = prior * mean0,  W_0 = prior

    ``w_t`` is 0 for digital silence and 1 once a frame's total power is 2 nats above it, so
    the mean follows what is heard, not the zeros between segments. In the log domain the
    mean carries the microphone's and room's colouring, the input gain and much of the
    speaker's average spectrum (vocal-tract length, breathiness); subtracting it leaves what
    changes from sound to sound. ``mean0`` (the training data's mean), worth ``prior`` frames,
    stands in before anything is heard and fades like any other frame. Both sums are
    first-order IIR filters with carried state, so streaming in chunks of any size gives
    exactly the offline result.
    """

    def __init__(self, mean0: np.ndarray, tau_frames: float = 300.0, prior: float = 30.0,
                 floor: float = -7.5) -> None:
        self.mean0 = np.asarray(mean0, np.float64).reshape(N_MELS)
        self.lam = 1.0 - 1.0 / float(tau_frames)
        self.prior = float(prior)
        self.floor = float(floor)
        self.reset()

    def reset(self) -> None:
        # lfilter's state is lam * (the previous output): the prior is the output before t=0
        self._s = self.lam * self.prior * self.mean0[None, :]
        self._w = np.array([self.lam * self.prior])

    def weights(self, feats: np.ndarray) -> np.ndarray:
        return self.weights_from_power(frame_log_power(feats))

    def weights_from_power(self, power: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(power, np.float64) - self.floor) / 2.0, 0.0, 1.0)

    def push(self, feats: np.ndarray, power: np.ndarray | None = None) -> np.ndarray:
        """Normalise new frames; ``power`` (``frame_log_power(feats)``) if already known."""
        x = np.asarray(feats, np.float64)
        if len(x) == 0:
            return np.zeros((0, N_MELS), np.float32)
        p = frame_log_power(x) if power is None else power
        return RunningNorm.push_many([self], x[None], np.asarray(p)[None])[0]

    @staticmethod
    def push_many(norms: list[RunningNorm], feats: np.ndarray, power: np.ndarray) -> np.ndarray:
        """``push`` for N streams whose new windows have the same length: ``feats`` (N, T, 80),
        ``power`` (N, T) -> (N, T, 80) float32. All norms must share their parameters (one
        model's). The IIR recursion runs over time, vectorised over streams and bands: for each
        element the same operations in the same order as lfilter's transposed direct form, so
        any chunking and any batching give bit-identical output."""
        x = np.asarray(feats, np.float64)
        n_streams, n = x.shape[:2]
        if n == 0:
            return np.zeros((n_streams, 0, N_MELS), np.float32)
        first = norms[0]
        if any(m.lam != first.lam or m.floor != first.floor for m in norms):
            raise ValueError("push_many needs norms with the same parameters")
        w = first.weights_from_power(power)  # (N, T)
        wx = w[:, :, None] * x
        s = np.empty_like(x)
        ww = np.empty((n_streams, n))
        zs = np.concatenate([m._s for m in norms])  # (N, 80)
        zw = np.concatenate([m._w for m in norms])  # (N,)
        lam = first.lam
        for t in range(n):
            zs = wx[:, t] + zs
            s[:, t] = zs
            zs = lam * zs
            zw = w[:, t] + zw
            ww[:, t] = zw
            zw = lam * zw
        mean0 = np.stack([m.mean0 for m in norms])[:, None, :]
        for i, m in enumerate(norms):
            m._s = zs[i:i + 1]
            m._w = zw[i:i + 1]
        mean = (s + 1e-6 * mean0) / (ww[:, :, None] + 1e-6)  # W fades in long silences
        return (x - mean).astype(np.float32)

    @classmethod
    def from_meta(cls, meta: dict | None) -> RunningNorm | None:
        """The normalisation a model was trained with (``visemes.json``), or None."""
        if not meta or meta.get("kind") != "running_mean":
            return None
        return cls(np.asarray(meta["mean0"]), meta["tau_frames"], meta["prior_frames"],
                   meta["floor"])

    def meta(self) -> dict:
        return {"kind": "running_mean", "tau_frames": round(1.0 / (1.0 - self.lam), 6),
                "prior_frames": self.prior, "floor": self.floor,
                "mean0": [round(float(v), 5) for v in self.mean0]}
