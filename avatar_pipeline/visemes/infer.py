"""Viseme inference with the shipped ONNX model: offline, streaming, and batched across sessions.

- ``VisemeModel``: one onnxruntime session (CUDA provider when present, else CPU) and the
  model's metadata. Shared by every stream of a worker.
- ``StreamingVisemes``: per session. ``push(pcm, sample_rate)`` resamples to 16 kHz, extends the
  log-mel over a ring buffer, advances the model's carried state and returns the weights of the
  video frames that are now complete (``(k, 15)``, rows sum to 1). ``flush()`` ends the segment
  (the last frames, as if silence followed) and resets.
- ``audio_to_visemes``: offline; it is the streaming path fed in large chunks, and the tests
  check that any chunking gives the same frames.
- ``VisemeBatcher``: one model call for the feature windows of N streams (one onnxruntime run
  per distinct window length; sessions ticking together have the same length), plus an asyncio
  front that flushes at ``max_batch`` or ``max_wait_ms``.

Timing: the 10 ms frame ``i`` gets its weights once the audio up to ``(i + 1 + lookahead) * 10
ms`` has been pushed; a video frame at ``fps`` needs all 10 ms frames it overlaps. The
resampler adds 16 input samples (<= 1 ms at 16 kHz+).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from avatar_pipeline.features import (
    HOP,
    N_MELS,
    SAMPLE_RATE,
    RunningNorm,
    StreamingLogMel,
    StreamingResampler,
    check_rate,
    frame_log_power,
    frames_to_logmel,
    to_float,
)
from avatar_pipeline.viseme_set import NUM_VISEMES, VISEME_INDEX
from avatar_pipeline.visemes.smoothing import Smoother, SmoothingParams
from config.logs import get_logger

log = get_logger(__name__)

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "visemes.onnx"
FRAMES_PER_S = SAMPLE_RATE // HOP  # 100
MAX_SECONDS = 3600.0  # offline inputs longer than an hour are refused (stream them instead)
# A 10 ms frame whose total mel power is below this (log) is digital silence (about white
# noise at -78 dBFS, i.e. below 16-bit dither): its weights are exactly ``sil``. The model was
# not trained on long stretches of all-zero input, so it is not asked about them.
SILENCE_LOG_POWER = -7.5


class VisemeModel:
    """The exported network in onnxruntime. Thread-safe to ``run`` (onnxruntime sessions are)."""

    def __init__(self, path: str | Path | None = None, providers: Sequence[str] | None = None,
                 threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path else DEFAULT_WEIGHTS
        if not self.path.exists():
            raise FileNotFoundError(f"viseme model not found: {self.path}")
        meta_path = self.path.with_suffix(".json")
        self.meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            avail = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in avail]
        self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
        self.providers = self.session.get_providers()
        st = self.session.get_inputs()[1].shape
        self.channels = int(self.meta.get("channels", st[1]))
        self.state_size = int(self.meta.get("state_size", st[2]))
        self.lookahead = int(self.meta.get("lookahead_frames", 5))
        # the per-stream feature normalisation the model was trained with (None: raw log-mel)
        self.normalisation: dict | None = self.meta.get("normalisation")
        # per-viseme shifts of the output's log-probabilities a model's JSON may name
        # (visemes/calibrate.py picks one for PP on validation speech; the shipped model has none)
        self.log_prior_shift: dict[str, float] = dict(self.meta.get("log_prior_shift") or {})
        self._prior = None
        if any(self.log_prior_shift.values()):
            self._prior = np.ones(NUM_VISEMES, np.float32)
            for name, nats in self.log_prior_shift.items():
                self._prior[VISEME_INDEX[name]] = math.exp(nats)

    def zero_state(self, n: int = 1) -> np.ndarray:
        return np.zeros((n, self.channels, self.state_size), np.float32)

    def run(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """feats (N, T, 80) float32, state (N, C, S) -> probs (N, T, 15), new state."""
        probs, new_state = self.session.run(
            None, {"feats": np.ascontiguousarray(feats, np.float32),
                   "state": np.ascontiguousarray(state, np.float32)})
        if self._prior is not None:
            probs = probs * self._prior
            probs /= probs.sum(axis=-1, keepdims=True)
        return probs, new_state


_MODEL: VisemeModel | None = None
_MODEL_LOCK = threading.Lock()


def default_model() -> VisemeModel:
    """The shipped model, loaded once per process."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            _MODEL = VisemeModel()
        return _MODEL


def _check_fps(fps) -> float:
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(f) or not 1 <= f <= 100:
        raise ValueError(f"fps must be in [1, 100], got {fps!r}")
    return f


class _FrameAggregator:
    """10 ms probability rows -> video-frame rows (overlap-weighted mean over the frame)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.rows: list[np.ndarray] = []  # 10 ms rows not yet fully consumed
        self.first = 0  # index of rows[0]
        self.next_frame = 0
        # at 25 (or 20, 50) fps a video frame is exactly r whole rows: summed as blocks
        r = FRAMES_PER_S / fps
        self.rows_per_frame = int(r) if r.is_integer() else None

    def _span(self, j: int) -> tuple[float, float]:
        return j * FRAMES_PER_S / self.fps, (j + 1) * FRAMES_PER_S / self.fps

    def needed(self, j: int) -> int:
        """Number of 10 ms rows needed (from the start) to emit video frame j."""
        return int(math.ceil(round(self._span(j)[1], 9)))

    def add(self, probs: np.ndarray, limit: int | None = None) -> np.ndarray:
        if len(probs):
            self.rows.extend(np.asarray(probs, np.float64))
        if self.rows_per_frame is not None:
            return self._add_blocks(limit)
        have = self.first + len(self.rows)
        out = []
        while (limit is None or self.next_frame < limit) and self.needed(self.next_frame) <= have:
            a, b = self._span(self.next_frame)
            acc = np.zeros(NUM_VISEMES)
            for i in range(int(math.floor(a)), int(math.ceil(round(b, 9)))):
                w = min(b, i + 1) - max(a, i)
                if w > 1e-12:
                    acc += w * self.rows[i - self.first]
            s = acc.sum()
            out.append(acc / s if s > 0 else acc)
            self.next_frame += 1
            drop = int(math.floor(self._span(self.next_frame)[0])) - self.first
            if drop > 0:
                del self.rows[:drop]
                self.first += drop
        if not out:
            return np.zeros((0, NUM_VISEMES), np.float32)
        return np.asarray(out, np.float32)

    def _add_blocks(self, limit: int | None) -> np.ndarray:
        """``add`` when a frame is r whole rows: the same sums (row by row, in order), as one
        reshape instead of a loop per frame."""
        r = self.rows_per_frame
        start = self.next_frame * r - self.first  # consumed rows are dropped: 0
        k = (len(self.rows) - start) // r
        if limit is not None:
            k = min(k, limit - self.next_frame)
        if k <= 0:
            return np.zeros((0, NUM_VISEMES), np.float32)
        acc = np.asarray(self.rows[start:start + k * r]).reshape(k, r, NUM_VISEMES).sum(axis=1)
        total = acc.sum(axis=1, keepdims=True)
        out = np.divide(acc, total, out=acc.copy(), where=total > 0)
        self.next_frame += k
        drop = self.next_frame * r - self.first
        del self.rows[:drop]
        self.first += drop
        return out.astype(np.float32)


class StreamingVisemes:
    """Audio of one session -> viseme weights per video frame, incrementally."""

    def __init__(self, fps: float = 25, model: VisemeModel | None = None,
                 smoothing: SmoothingParams | None = None) -> None:
        self.fps = _check_fps(fps)
        self.model = model or default_model()
        self.smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        self._sr: int | None = None
        self._resampler: StreamingResampler | None = None
        self._mel = StreamingLogMel()
        self._norm = RunningNorm.from_meta(self.model.normalisation)
        self._state = self.model.zero_state(1)
        self._steps = 0  # model steps run (feature frames consumed)
        self._agg = _FrameAggregator(self.fps)
        self._n_in_s = 0.0  # seconds of audio pushed
        self._silent: list[bool] = []  # digital-silence flag per 10 ms frame not yet output
        self._silent_first = 0  # frame index of _silent[0]
        # the smoother's time constants are per video frame: use this stream's fps
        self._smoother = Smoother(replace(self.smoothing, fps=self.fps)) \
            if self.smoothing else None

    @property
    def frames_emitted(self) -> int:
        return self._agg.next_frame

    # --- the two halves, so that a batcher can run the model in between ---------------------
    def features(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """Resample + log-mel + normalisation for new audio; the new feature frames (T, 80)."""
        return features_many([self], [(pcm, sample_rate)])[0]

    def _windows(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """Resample new audio and cut its new analysis windows (T, WIN)."""
        sr = check_rate(sample_rate)
        x = to_float(pcm)
        if self._sr != sr:
            tail = self._resampler.flush() if self._resampler is not None else None
            self._resampler = StreamingResampler(sr)
            self._sr = sr
            if tail is not None and len(tail):
                x16_tail = tail
            else:
                x16_tail = np.zeros(0, np.float32)
        else:
            x16_tail = np.zeros(0, np.float32)
        self._n_in_s += len(x) / sr
        x16 = np.concatenate([x16_tail, self._resampler.push(x)])
        return self._mel.frames(x16)

    def _track_silence(self, feats: np.ndarray) -> np.ndarray:
        """Note which new frames are digital silence, then normalise them for the model."""
        power = frame_log_power(feats)
        self._silent.extend((power < SILENCE_LOG_POWER).tolist())
        return self._norm.push(feats, power) if self._norm is not None else feats

    def consume(self, probs: np.ndarray, limit: int | None = None) -> np.ndarray:
        """Model output rows for the features given (in order) -> new video frames."""
        L = self.model.lookahead
        skip = max(0, L - self._steps)
        first = self._steps + skip - L  # 10 ms frame index of probs[skip]
        self._steps += len(probs)
        probs = np.array(probs[skip:], np.float32)
        if len(probs):
            flags = np.asarray(self._silent[first - self._silent_first:
                                            first - self._silent_first + len(probs)], bool)
            if flags.any():
                probs[flags[: len(probs)]] = np.eye(NUM_VISEMES, dtype=np.float32)[0]
            drop = first + len(probs) - self._silent_first
            del self._silent[:drop]
            self._silent_first += drop
        rows = self._agg.add(probs, limit)
        if self._smoother is not None and len(rows):
            rows = self._smoother.process(rows)
        return rows

    # --- the single-stream API ---------------------------------------------------------------
    def push(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        feats = self.features(pcm, sample_rate)
        if len(feats) == 0:
            return np.zeros((0, NUM_VISEMES), np.float32)
        probs, self._state = self.model.run(feats[None], self._state)
        return self.consume(probs[0])

    def flush_features(self) -> tuple[np.ndarray, int]:
        """The silence features that complete the segment, and the total frame count."""
        n_frames = int(math.ceil(round(self._n_in_s * self.fps, 6)))
        tail = self._resampler.flush() if self._resampler is not None else np.zeros(0)
        feats = [self._track_silence(self._mel.push(tail))]
        rows_needed = self._agg.needed(n_frames - 1) if n_frames > 0 else 0
        steps_needed = rows_needed + self.model.lookahead
        have = self._steps + len(feats[0])
        if have < steps_needed:
            pending = self._mel.pending_samples()
            feats.append(self._track_silence(self._mel.push(
                np.zeros((steps_needed - have) * HOP - pending, np.float32))))
        return np.concatenate(feats), n_frames

    def flush(self) -> np.ndarray:
        """End of segment: emit the remaining frames (``ceil(duration * fps)`` in all) and
        reset for the next segment."""
        feats, n_frames = self.flush_features()
        out = np.zeros((0, NUM_VISEMES), np.float32)
        if len(feats):
            probs, self._state = self.model.run(feats[None], self._state)
            out = self.consume(probs[0], limit=n_frames)
        self.reset()
        return out


def features_many(streams: Sequence[StreamingVisemes],
                  audio: Sequence[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """``features`` for many streams at once (one tick of a worker): each stream resamples and
    cuts its own windows, then one FFT and mel projection runs over all of them, and streams
    with the same number of new frames share one normalisation recursion. Every step is
    row-wise or element-wise, so each stream gets the numbers it would get alone."""
    windows = [s._windows(p, sr) for s, (p, sr) in zip(streams, audio, strict=True)]
    counts = [len(w) for w in windows]
    mel = frames_to_logmel(np.concatenate(windows)) if sum(counts) else \
        np.zeros((0, N_MELS), np.float32)
    power = frame_log_power(mel)
    edges = np.cumsum([0, *counts])
    out: list[np.ndarray] = [mel[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(streams):
        pw = power[edges[i]:edges[i + 1]]
        s._silent.extend((pw < SILENCE_LOG_POWER).tolist())
        if s._norm is not None and counts[i]:
            groups.setdefault(counts[i], []).append(i)
    for idxs in groups.values():
        normed = RunningNorm.push_many(
            [streams[i]._norm for i in idxs], np.stack([out[i] for i in idxs]),
            np.stack([power[edges[i]:edges[i + 1]] for i in idxs]))
        for k, i in enumerate(idxs):
            out[i] = normed[k]
    return out


def audio_to_visemes(pcm: np.ndarray, sample_rate: int, fps: float = 25,
                     model: VisemeModel | None = None,
                     smoothing: SmoothingParams | None = None,
                     chunk_seconds: float = 30.0) -> np.ndarray:
    """Offline: (n_frames, 15) float32 weights, ``n_frames = ceil(duration * fps)``.

    Silence gives ``sil``; NaN/Inf samples count as 0; float input is clipped to [-1, 1];
    empty input gives ``(0, 15)``; a bad sample rate / fps, or more than an hour of audio,
    raises ``ValueError``."""
    sr = check_rate(sample_rate)
    _check_fps(fps)
    a = np.asarray(pcm)
    if a.ndim not in (1, 2):
        raise ValueError(f"pcm must be mono 1-D, got shape {a.shape}")
    n = a.shape[0] if a.ndim == 1 else max(a.shape)
    if n / sr > MAX_SECONDS:
        raise ValueError(f"input longer than {MAX_SECONDS:.0f} s; stream it instead")
    x = to_float(a)
    s = StreamingVisemes(fps, model=model, smoothing=smoothing)
    step = max(1, int(chunk_seconds * sr))
    outs = [s.push(x[i:i + step], sr) for i in range(0, len(x), step)]
    outs.append(s.flush())
    return np.concatenate(outs) if outs else np.zeros((0, NUM_VISEMES), np.float32)


class VisemeBatcher:
    """One model, many streams: ``run_windows`` does one onnxruntime run for N windows of the
    same length; ``push_many`` is the per-tick API a worker uses; ``submit`` is the asyncio
    front that flushes at ``max_batch`` windows or ``max_wait_ms``, whichever comes first."""

    def __init__(self, model: VisemeModel | None = None, max_batch: int = 64,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch >= 1 and max_wait_ms >= 0")
        self.model = model or default_model()
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.runs = 0  # onnxruntime calls made (for tests and metrics)
        self._pending: list[tuple[StreamingVisemes, np.ndarray, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None

    def stream(self, fps: float = 25, smoothing: SmoothingParams | None = None
               ) -> StreamingVisemes:
        return StreamingVisemes(fps, model=self.model, smoothing=smoothing)

    def run_windows(self, streams: Sequence[StreamingVisemes], feats: Sequence[np.ndarray]
                    ) -> list[np.ndarray]:
        """Advance each stream's model state over its feature window; returns the probability
        rows per stream. Windows are grouped by length: one run per group, in chunks of
        ``max_batch``."""
        out: list[np.ndarray | None] = [None] * len(streams)
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            if len(f) == 0:
                out[i] = np.zeros((0, NUM_VISEMES), np.float32)
            else:
                groups.setdefault(len(f), []).append(i)
        for _t, idxs in groups.items():
            for c in range(0, len(idxs), self.max_batch):
                part = idxs[c:c + self.max_batch]
                x = np.stack([feats[i] for i in part]).astype(np.float32)
                st = np.concatenate([streams[i]._state for i in part])
                probs, new_state = self.model.run(x, st)
                self.runs += 1
                for k, i in enumerate(part):
                    streams[i]._state = new_state[k:k + 1]
                    out[i] = probs[k]
        return out  # type: ignore[return-value]

    def push_many(self, items: Sequence[tuple[StreamingVisemes, np.ndarray, int]]
                  ) -> list[np.ndarray]:
        """One tick: (stream, pcm, sample_rate) per session -> new frames per session."""
        streams = [s for s, _, _ in items]
        feats = features_many(streams, [(p, sr) for _, p, sr in items])
        probs = self.run_windows(streams, feats)
        return [s.consume(p) for s, p in zip(streams, probs, strict=True)]

    def flush_many(self, streams: Sequence[StreamingVisemes]) -> list[np.ndarray]:
        """End the segments of several streams with one batched run per window length."""
        tails = [s.flush_features() for s in streams]
        probs = self.run_windows(streams, [f for f, _ in tails])
        out = [s.consume(p, limit=n) for s, p, (_, n) in zip(streams, probs, tails, strict=True)]
        for s in streams:
            s.reset()
        return out

    async def submit(self, stream: StreamingVisemes, pcm: np.ndarray, sample_rate: int
                     ) -> np.ndarray:
        """Asyncio front: queue this stream's new audio; the batch runs when ``max_batch``
        windows wait or ``max_wait_ms`` after the first, whichever is first."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        feats = stream.features(pcm, sample_rate)
        if any(s is stream for s, _, _ in self._pending):
            self._flush()  # a stream's windows must run in order
        self._pending.append((stream, feats, fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            probs = self.run_windows([s for s, _, _ in batch], [f for _, f, _ in batch])
            for (s, _, fut), p in zip(batch, probs, strict=True):
                if not fut.done():
                    fut.set_result(s.consume(p))
        except Exception as e:  # a failed run fails its callers, never the batcher
            log.exception("viseme_batch_failed", size=len(batch))
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)


__all__ = ["VisemeModel", "default_model", "StreamingVisemes", "audio_to_visemes",
           "VisemeBatcher", "N_MELS"]
