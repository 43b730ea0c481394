"""Augmentation for the viseme corpus: move speech between voices, rooms, devices and codecs.

Each step runs with a probability (``AugmentConfig``), drawn once per utterance into a plain
dict (``sample``) so that a corpus records exactly what was done to each utterance:

1. **Voice** (the WORLD vocoder through ``pyworld``, MIT): re-synthesised with its spectral
   envelope stretched along the frequency axis (formants x 0.8-1.25: vocal-tract length), a
   new pitch median 70-300 Hz and pitch range, and tempo 0.85-1.15. Time is scaled
   uniformly, so the labels scale by the same factor.
2. **EQ**: up to three peaking bands and two shelves (+-10 dB; RBJ biquads), or a telephone
   band-pass (Butterworth 300-3400 Hz), run forward and backward (``scipy.signal``) so the
   audio does not move against its labels.
3. **Reverb**: a synthetic exponential-decay room response (RT60 0.15-0.8 s).
4. **Resampling** through 8/16/24/48 kHz (``scipy.signal.resample_poly``).
5. **Codec** through ffmpeg's (PyAV): Opus 12-32 kbit/s, G.711 mu-law / A-law and AMR-NB
   (phone networks, 8 kHz), G.722 (wideband VoIP), MP3. Each round trip is put back in line
   with its input (its codec delay found by cross-correlation).
6. **Noise** (white / pink / brown / hum) at 5-30 dB SNR; **gain** -25..+6 dB with occasional
   clipping; int16 quantisation.

Every step is deterministic for the utterance's seed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from avatar_pipeline.features import SAMPLE_RATE

CODECS = ("opus", "mulaw", "alaw", "amr", "g722", "mp3")
AMR_KBPS = (4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2)


@dataclass
class AugmentConfig:
    p_voice: float = 0.5
    p_tempo: float = 0.4  # of voice changes, how many also change the tempo
    p_eq: float = 0.5
    p_reverb: float = 0.35
    p_resample: float = 0.5
    p_codec: float = 0.35
    p_noise: float = 0.6
    p_clip: float = 0.05
    snr_db: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def sample(rng: np.random.Generator, cfg: AugmentConfig) -> dict:
    """One utterance's augmentation, as a JSON-able dict (``augment`` applies it)."""
    def log_uniform(a: float, b: float) -> float:
        return float(np.exp(rng.uniform(np.log(a), np.log(b))))

    voice = rng.random() < cfg.p_voice
    a = {
        "voice": bool(voice),
        "formant": log_uniform(0.8, 1.25),
        "pitch_hz": log_uniform(70.0, 300.0) if rng.random() < 0.8 else 0.0,
        "pitch_range": log_uniform(0.6, 1.6),
        "tempo": log_uniform(0.85, 1.15) if voice and rng.random() < cfg.p_tempo else 1.0,
        "eq": bool(rng.random() < cfg.p_eq),
        "eq_bands": [(log_uniform(150.0, 6000.0), float(rng.uniform(-10, 10)),
                      log_uniform(0.5, 3.0)) for _ in range(int(rng.integers(1, 4)))],
        "eq_shelves": (float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8))),
        "telephone": bool(rng.random() < 0.15),
        "reverb": bool(rng.random() < cfg.p_reverb),
        "rt60": float(rng.uniform(0.15, 0.8)),
        "drr_db": float(rng.uniform(-2, 12)),
        "via_rate": int(rng.choice([8000, 16000, 24000, 48000])) if rng.random() < cfg.p_resample
        else 0,
        "codec": str(rng.choice(CODECS, p=[0.35, 0.12, 0.08, 0.15, 0.15, 0.15]))
        if rng.random() < cfg.p_codec else "",
        "opus_kbps": int(rng.choice([12, 16, 24, 32])),
        "amr_kbps": float(rng.choice(AMR_KBPS)),
        "mp3_kbps": int(rng.choice([24, 32, 48, 64])),
        "noise": str(rng.choice(["white", "pink", "brown", "hum"])) if rng.random() < cfg.p_noise
        else "",
        "snr_db": float(rng.choice(cfg.snr_db)),
        "gain_db": float(rng.uniform(-25, 6)),
        "clip": bool(rng.random() < cfg.p_clip),
        "seed": int(rng.integers(2**31)),
    }
    return a


# --- the steps ------------------------------------------------------------------------------

def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if sr_in == sr_out:
        return np.asarray(x, np.float32)
    g = np.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def change_voice(x: np.ndarray, sr: int, formant: float, pitch_hz: float,
                 pitch_range: float, tempo: float) -> np.ndarray:
    """WORLD analysis/synthesis: the spectral envelope stretched by ``formant`` along the
    frequency axis, the pitch median moved to ``pitch_hz`` (0 keeps it) with its excursions
    scaled by ``pitch_range``, the duration scaled by ``tempo`` (every frame alike)."""
    import warnings

    with warnings.catch_warnings():  # pyworld's own import of the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        import pyworld

    x64 = np.asarray(x, np.float64)
    if len(x64) < sr // 10:
        return np.asarray(x, np.float32)
    period = 5.0
    f0, t = pyworld.dio(x64, sr, frame_period=period)
    f0 = pyworld.stonemask(x64, f0, t, sr)
    sp = pyworld.cheaptrick(x64, f0, t, sr)
    ap = pyworld.d4c(x64, f0, t, sr)
    voiced = f0 > 0
    if voiced.any():
        logf = np.log(f0[voiced])
        med = float(np.median(logf))
        target = np.log(pitch_hz) if pitch_hz > 0 else med
        f0[voiced] = np.exp(target + (logf - med) * pitch_range)
    n = sp.shape[1]
    src = np.clip(np.arange(n) / formant, 0, n - 1)  # new bin k shows old bin k / formant
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = src - lo
    sp = np.ascontiguousarray(sp[:, lo] * (1 - w) + sp[:, hi] * w)
    y = pyworld.synthesize(f0, sp, ap, sr, frame_period=period * tempo)
    return _fit(y, int(round(len(x) * tempo)))


def _peak(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking filter as one second-order section."""
    a_ = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a_, -2 * np.cos(w0), 1 - alpha * a_]
    a = [1 + alpha / a_, -2 * np.cos(w0), 1 - alpha / a_]
    return np.array([*b, *a]) / a[0]


def _shelf(f0: float, gain_db: float, sr: int, high: bool) -> np.ndarray:
    """RBJ cookbook low / high shelf (slope 1) as one second-order section."""
    a_ = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    c, alpha = np.cos(w0), np.sin(w0) / 2 * np.sqrt(2)
    r = 2 * np.sqrt(a_) * alpha
    sg = 1 if high else -1
    b = [a_ * ((a_ + 1) + sg * (a_ - 1) * c + r), -2 * sg * a_ * ((a_ - 1) + sg * (a_ + 1) * c),
         a_ * ((a_ + 1) + sg * (a_ - 1) * c - r)]
    a = [(a_ + 1) - sg * (a_ - 1) * c + r, 2 * sg * ((a_ - 1) - sg * (a_ + 1) * c),
         (a_ + 1) - sg * (a_ - 1) * c - r]
    return np.array([*b, *a]) / a[0]


def equalise(x: np.ndarray, sr: int, bands, shelves, telephone: bool) -> np.ndarray:
    """Peaking bands + shelves, or a telephone band-pass; zero-phase (forward and back), so
    each gain applies twice: halved here."""
    from scipy.signal import butter, sosfiltfilt

    nyq = sr / 2 * 0.95
    if telephone:
        sos = butter(4, [300.0, min(3400.0, nyq)], "bandpass", fs=sr, output="sos")
    else:
        sos = np.stack([_peak(min(f, nyq), g / 2, q, sr) for f, g, q in bands]
                       + [_shelf(250.0, shelves[0] / 2, sr, high=False),
                          _shelf(min(4000.0, nyq), shelves[1] / 2, sr, high=True)])
    return sosfiltfilt(sos, np.asarray(x, np.float64)).astype(np.float32)


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
        y = resample(y, dec_rate, sr)
    return _fit(y, len(x))


def _align(y: np.ndarray, x: np.ndarray, max_lag: int) -> np.ndarray:
    """``y`` (a codec's output of ``x``, delayed by up to ``max_lag`` samples) moved back in
    line with ``x``: the lag is where the cross-correlation of their envelopes peaks
    (envelopes, because parametric codecs such as AMR keep the spectrum, not the phase)."""
    n = len(x)
    if n == 0 or not np.any(x):
        return _fit(y, n)

    def env(a: np.ndarray) -> np.ndarray:
        e = np.convolve(np.abs(a), np.ones(16) / 16, mode="same")
        return e - e.mean()

    size = 1 << int(np.ceil(np.log2(n + len(y) + max_lag)))
    c = np.fft.irfft(np.fft.rfft(env(y), size) * np.conj(np.fft.rfft(env(x), size)), size)
    lag = int(np.argmax(c[: max_lag + 1]))
    return _fit(y[lag:], n)


_DECODER = {"libopencore_amrnb": "amrnb", "libmp3lame": "mp3"}


def _pyav_roundtrip(x: np.ndarray, sr: int, codec: str, rate: int, bit_rate: int | None
                    ) -> np.ndarray:
    """Encode with one of ffmpeg's audio encoders at ``rate`` and decode back (raw codec
    contexts, no container), aligned with the input."""
    import av

    xr = resample(x, sr, rate)
    pcm = (np.clip(xr, -1, 1) * 32767).astype(np.int16)
    enc = av.CodecContext.create(codec, "w")
    enc.sample_rate, enc.layout = rate, "mono"
    enc.format = "s16p" if "s16p" in [f.name for f in enc.codec.audio_formats] else \
        enc.codec.audio_formats[0].name
    if bit_rate:
        enc.bit_rate = bit_rate
    enc.open()
    step = enc.frame_size or 1024
    packets = []
    conv = av.AudioResampler(format=enc.format.name, layout="mono", rate=rate)
    for i in range(0, len(pcm), step):
        chunk = pcm[i:i + step]
        if len(chunk) < step and enc.frame_size:
            chunk = np.pad(chunk, (0, step - len(chunk)))
        fr = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        fr.sample_rate = rate
        fr.pts = i
        for f2 in conv.resample(fr):
            packets += enc.encode(f2)
    packets += enc.encode(None)
    dec = av.CodecContext.create(_DECODER.get(codec, codec), "r")
    dec.sample_rate, dec.layout = rate, "mono"
    out = []
    for p in packets:
        for f in dec.decode(p):
            a = f.to_ndarray()
            a = a.reshape(-1) if a.ndim == 1 or a.shape[0] == 1 else a.mean(axis=0)
            out.append(a.astype(np.float32) / (32768.0 if a.dtype == np.int16 else 1.0))
    y = np.concatenate(out) if out else np.zeros(0, np.float32)
    return _fit(resample(_align(y, xr, rate // 4), rate, sr), len(x))


def g711_roundtrip(x: np.ndarray, sr: int, law: str = "mulaw") -> np.ndarray:
    """G.711 (``mulaw`` or ``alaw``) at 8 kHz."""
    return _pyav_roundtrip(x, sr, f"pcm_{law}", 8000, None)


def codec_roundtrip(x: np.ndarray, sr: int, a: dict) -> np.ndarray:
    kind = a.get("codec", "")
    if kind == "opus":
        return opus_roundtrip(x, sr, a["opus_kbps"])
    if kind in ("mulaw", "alaw"):
        return g711_roundtrip(x, sr, kind)
    if kind == "amr":
        return _pyav_roundtrip(x, sr, "libopencore_amrnb", 8000, int(a["amr_kbps"] * 1000))
    if kind == "g722":
        return _pyav_roundtrip(x, sr, "g722", 16000, 64000)
    if kind == "mp3":
        return _pyav_roundtrip(x, sr, "libmp3lame", 16000 if sr <= 16000 else 24000,
                               a["mp3_kbps"] * 1000)
    if kind:
        raise ValueError(f"unknown codec {kind!r}")
    return x


def noise(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
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


def noise_bed(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz float audio with no speech in it, as a room, a line or a codec
    gives between words: one or two of white, pink, brown noise and mains hum, sometimes
    coloured by a random EQ and passed through a codec, at -80...-25 dBFS. Long enough that
    the running normalisation adapts to it, so training sees stationary noise after its level
    has been taken out, as a stream sees a long pause."""
    n = int(seconds * SAMPLE_RATE)
    a = sample(rng, AugmentConfig(p_voice=0.0, p_reverb=0.0, p_resample=0.0, p_noise=0.0,
                                  p_clip=0.0))
    kinds = ["white", "pink", "brown", "hum"]
    x = noise(rng, str(rng.choice(kinds)), n, SAMPLE_RATE)
    if rng.random() < 0.3:
        y = noise(rng, str(rng.choice(kinds)), n, SAMPLE_RATE)
        x = x / (np.std(x) + 1e-9) + y / (np.std(y) + 1e-9) * 10 ** (rng.uniform(-20, 0) / 20)
    if a["eq"]:
        x = equalise(x, SAMPLE_RATE, a["eq_bands"], a["eq_shelves"], a["telephone"])
    x = x / (np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)
    x = x * 10 ** (rng.uniform(-80.0, -25.0) / 20)
    x = _fit(codec_roundtrip(np.clip(x, -1.0, 1.0).astype(np.float32), SAMPLE_RATE, a), n)
    return (np.round(np.clip(x, -1.0, 32767 / 32768) * 32768) / 32768).astype(np.float32)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float32).reshape(-1)[:n]
    return np.pad(y, (0, n - len(y))).astype(np.float32)


def augment(x: np.ndarray, sr: int, a: dict) -> tuple[np.ndarray, float]:
    """Float audio at ``sr`` -> (augmented float audio at 16 kHz, time scale). The time scale
    is the tempo change (1.0 unless the voice step changed it): a label at ``t`` seconds in
    the input is at ``t * scale`` in the output."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(a.get("seed", 0))
    scale = 1.0
    x = np.asarray(x, np.float32)
    if a.get("voice"):
        if sr > SAMPLE_RATE:  # the analysis costs less at 16 kHz, and features stop at 7.6
            x = resample(x, sr, SAMPLE_RATE)
            sr = SAMPLE_RATE
        x = change_voice(x, sr, a["formant"], a["pitch_hz"], a["pitch_range"], a["tempo"])
        scale = a["tempo"]
    if a.get("eq"):
        x = equalise(x, sr, a["eq_bands"], a["eq_shelves"], a.get("telephone", False))
    if a.get("reverb"):
        h = synthetic_rir(rng, sr, a["rt60"], a["drr_db"])
        x = fftconvolve(x, h)[: len(x)].astype(np.float32)
    if a.get("via_rate"):
        x = resample(x, sr, a["via_rate"])
        sr = a["via_rate"]
    x = resample(x, sr, SAMPLE_RATE)
    x = codec_roundtrip(x, SAMPLE_RATE, a)
    if a.get("noise"):
        nz = noise(rng, a["noise"], len(x), SAMPLE_RATE)
        ps = float(np.mean(x ** 2)) + 1e-12
        pn = float(np.mean(nz ** 2)) + 1e-12
        x = x + nz * np.sqrt(ps / pn / 10 ** (a["snr_db"] / 10))
    peak = float(np.max(np.abs(x))) + 1e-9
    x = x / peak * 0.5 * 10 ** (a.get("gain_db", 0.0) / 20)
    if a.get("clip"):
        x = x * 10 ** (12 / 20)
    x = np.clip(x, -1.0, 32767 / 32768)
    return (np.round(x * 32768) / 32768).astype(np.float32), scale
