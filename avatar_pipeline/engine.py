"""The per-worker engine: every session of a worker, one model, one compositor, one tick.

A worker runs one :class:`AvatarEngine`. Each lesson opens an :class:`EngineSession` on it and
pushes speech into it (network audio through :meth:`EngineSession.push_audio` /
:meth:`EngineSession.end_segment`, or lesson text already spoken by our TTS through
:meth:`EngineSession.say`). The engine's thread ticks once per video frame period and, for all
sessions at once:

1. takes one frame period of audio out of each session's adaptive jitter buffer
   (:mod:`avatar_pipeline.jitter`), so bursts and network jitter are smoothed per session
   (it follows its target delay by time-stretching speech a little, or by shortening and
   lengthening pauses: words are never dropped);
2. runs **one** batched viseme-model call for every session that has audio this tick
   (:class:`avatar_pipeline.visemes.VisemeBatcher`, chunked at ``max_batch``);
3. composes **one** batch of frames, one per session (:mod:`avatar_pipeline.compose`);
   Sessions of an avatar whose renderer is ``neural`` then get their lower face repainted
   by the worker's Wav2Lip-class model, in **one** batched call for all of them
   (:mod:`avatar_pipeline.neural`): each frame's window of Wav2Lip mel features covers ~212 ms
   of the audio after it, so their speech frames wait for that much audio
   (:class:`avatar_pipeline.neural.stream.MelStream`), and a pause shows the model's mouth on
   silence;
4. hands each session exactly one :class:`OutputFrame`: the video frame and, while speaking,
   exactly ``1/fps`` of the audio it shows, so audio and video are in sync by construction.

The tick is the batcher's flush: nothing waits for a batch to fill, so the batcher never makes a
session late (``max_batch`` only splits a very large tick into several model calls). A tick that
starts more than one period late is counted and the schedule restarts from now: late frames are
counted, never bursted.

The engine knows nothing about LiveKit: audio is int16 numpy arrays, frames are I420 (or RGBA)
bytes. ``agent/`` adapts it to a livekit-agents ``VideoGenerator``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from avatar_pipeline.compose import SessionClock, make_compositor
from avatar_pipeline.compose.base import head_offset
from avatar_pipeline.jitter import JitterBuffer, JitterConfig, Pull
from avatar_pipeline.neural import NeuralRenderer
from avatar_pipeline.neural.audio import SILENT_WINDOW, mel_windows
from avatar_pipeline.neural.stream import MelStream
from avatar_pipeline.stretch import stretch_packets
from avatar_pipeline.viseme_set import NUM_VISEMES, SILENCE
from config.logs import get_logger
from config.metrics import LATENCY_BUCKETS, counter, gauge, histogram

log = get_logger("avatar_pipeline.engine")

TICKS = counter("avatar_engine_ticks_total", "Engine ticks", ("result",))
BATCH = histogram("avatar_engine_batch_size", "Sessions composed in one tick",
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
TICK_SECONDS = histogram("avatar_engine_tick_seconds", "Work time of one tick (all sessions)")
FRAME_LATENCY = histogram("avatar_frame_latency_seconds",
                          "Speech audio leaving the jitter buffer -> its frame out",
                          buckets=LATENCY_BUCKETS)
SPEECH_START = histogram("avatar_speech_start_seconds",
                         "First audio of a speech segment in -> the first frame that shows it out",
                         buckets=LATENCY_BUCKETS)
UNDERRUNS = counter("avatar_audio_underruns_total", "Jitter-buffer underruns")
SESSIONS = gauge("avatar_engine_sessions", "Sessions open on the engine")
LAST_BATCH = gauge("avatar_engine_batch_sessions", "Sessions composed together in the last tick")
NEURAL_FRAMES = counter("avatar_neural_frames_total",
                        "Frames whose lower face the neural renderer repainted")
NEURAL_MISSING = counter("avatar_neural_unavailable_total",
                         "Avatars asking for the neural renderer on an engine without a model "
                         "(drawn with their sprites instead)")
SILENT = np.zeros(NUM_VISEMES, np.float32)
SILENT[SILENCE] = 1.0


SILENCE_RMS = 300.0  # int16: about -40 dBFS


def is_silent(pcm: np.ndarray | None) -> bool:
    """A packet quiet enough to drop or repeat when the buffer steers its delay (a pause, not
    a word)."""
    if pcm is None or len(pcm) == 0:
        return True
    x = pcm.astype(np.float32)
    return float(np.sqrt(np.mean(x * x))) < SILENCE_RMS


@dataclass(frozen=True)
class EngineConfig:
    fps: int = 25
    sample_rate: int = 48000  # audio out (and in: callers resample to this)
    fmt: str = "i420"  # i420 (LiveKit VideoBufferType.I420) or rgba
    backend: str = "numpy"  # numpy | torch | torch-cpu (see avatar_pipeline.compose)
    max_batch: int = 64
    jitter: JitterConfig | None = None  # None: adaptive defaults, one packet per frame period
    smoothing: bool = True
    # a Wav2Lip-class ONNX generator (avatar_pipeline.neural) for avatars whose renderer is
    # "neural"; None: every avatar is drawn with its sprites
    neural_model: str | None = None

    @property
    def samples_per_frame(self) -> int:
        spf = self.sample_rate / self.fps
        if spf != int(spf):
            raise ValueError(f"{self.sample_rate} Hz is not a whole number of samples per frame "
                             f"at {self.fps} fps")
        return int(spf)


@dataclass
class OutputFrame:
    """What a session shows and plays for one frame period."""

    index: int  # frame number within the session
    video: bytes
    width: int
    height: int
    fmt: str
    audio: np.ndarray | None  # int16, exactly samples_per_frame, or None (not speaking)
    weights: np.ndarray  # the viseme weights shown
    blink: float = 0.0  # how shut the eyes are, 0..1
    segment_end: bool = False  # the last frame of a speech segment
    latency_s: float | None = None  # audio out of the jitter buffer -> this frame
    speech_start_s: float | None = None  # first frame of a segment: its first audio in -> out
    tick_at: float = 0.0  # engine clock (s) of the tick that made this frame
    cue: Callable[[], None] | None = None  # say()'s on_start, on the first frame of its speech
    stretch_s: float = 0.0  # audio time this frame adds (+) or saves (-) against the sender's


@dataclass
class _Row:
    weights: np.ndarray
    audio: np.ndarray | None  # None: an underrun, nothing to play
    pulled_at: float
    segment_end: bool = False
    first_in: float | None = None  # first row of a segment: when its first audio came in
    cue: Callable[[], None] | None = None
    stretch_s: float = 0.0
    mel: np.ndarray | None = None  # a neural session's Wav2Lip window for this frame


@dataclass
class EngineSession:
    """One lesson's state on the engine. Thread-safe to call from any thread/event loop."""

    engine: AvatarEngine
    session_id: str
    avatar_id: str
    on_frame: Callable[[OutputFrame], None]
    clock: SessionClock
    jitter: JitterBuffer
    visemes: object  # StreamingVisemes
    started_at: float = 0.0
    render: bool = True  # False: weights and audio only, no picture (a visemes-only lesson)
    lips: MelStream | None = None  # a neural session's Wav2Lip windows
    _inbox: collections.deque = field(default_factory=collections.deque)
    _pending: bytearray = field(default_factory=bytearray)  # audio not yet a whole packet
    _segment: int = 0
    _seq: int = 0
    _rows: collections.deque = field(default_factory=collections.deque)  # frames ready to show
    # a neural session's rows waiting for their mel windows (lips), and windows waiting for rows
    _held: collections.deque = field(default_factory=collections.deque)
    _mels: collections.deque = field(default_factory=collections.deque)
    _fifo: collections.deque = field(default_factory=collections.deque)  # audio awaiting rows
    _first_in: dict = field(default_factory=dict)  # segment -> arrival of its first audio
    _received: int = 0  # samples of the current segment received so far
    _playing_segment: int | None = None
    _frames_out: int = 0
    closed: bool = False

    # --- input (any thread) ---------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, arrived: float | None = None) -> None:
        """Speech audio, int16 mono at the engine's sample rate, as it arrives. ``arrived``:
        when its last sample reached the worker (engine clock), if earlier than now (audio a
        resampler held back); the jitter buffer times it from then."""
        a = np.asarray(pcm)
        if a.dtype != np.int16 or a.ndim != 1:
            raise ValueError(f"push_audio wants 1-D int16 PCM, got {a.dtype} {a.shape}")
        now = self.engine.clock()
        self._inbox.append(("audio", a.tobytes(), now if arrived is None else min(now, arrived)))

    def end_segment(self) -> None:
        """The speech segment (one stream) is over; what is buffered still plays."""
        self._inbox.append(("end", None, self.engine.clock()))

    def clear(self) -> None:
        """Interruption: drop every queued sample and frame of speech at once."""
        self._inbox.append(("clear", None, self.engine.clock()))

    def say(self, pcm: np.ndarray, weights: np.ndarray,
            on_start: Callable[[], None] | None = None) -> None:
        """Pre-timed speech (our TTS): int16 PCM at the engine rate and its viseme track
        (one row per frame). Queued after what is already queued. ``on_start`` travels with
        the first frame of this speech (:attr:`OutputFrame.cue`), for whoever publishes the
        frames to call when it goes out (e.g. to pace captions with the audio)."""
        spf = self.engine.config.samples_per_frame
        n = len(weights)
        if n == 0:
            return
        pcm = np.asarray(pcm, np.int16)
        audio = np.zeros(n * spf, np.int16)
        audio[:min(len(pcm), n * spf)] = pcm[:n * spf]
        weights = np.asarray(weights, np.float32)
        if self.engine._smoothing is not None:
            from avatar_pipeline.visemes.smoothing import smooth_known_track

            weights = smooth_known_track(weights, self.engine._smoothing)
        self._inbox.append(("say", (audio.reshape(n, spf), weights, on_start),
                            self.engine.clock()))

    @property
    def speaking(self) -> bool:
        return bool(self._rows) or bool(self._held) or self._playing_segment is not None

    def close(self) -> None:
        self.engine.close_session(self.session_id)

    # --- engine thread ----------------------------------------------------------------------
    def _drain_inbox(self, spf_bytes: int) -> None:
        while self._inbox:
            kind, data, at = self._inbox.popleft()
            at_ms = at * 1000.0
            if kind == "audio":
                self._pending += data
                self._first_in.setdefault(self._segment, at)
                while len(self._pending) >= spf_bytes:
                    packet = np.frombuffer(bytes(self._pending[:spf_bytes]), np.int16)
                    del self._pending[:spf_bytes]
                    self.jitter.push(self._segment, self._seq, at_ms, packet)
                    self._seq += 1
                self._received += len(data) // 2
                self.jitter.received(self._segment,
                                     self._received * 1000.0 / self.engine.config.sample_rate)
            elif kind == "end":
                if self._pending:  # the last partial packet, padded with silence
                    packet = np.zeros(spf_bytes // 2, np.int16)
                    tail = np.frombuffer(bytes(self._pending), np.int16)
                    packet[:len(tail)] = tail
                    self._pending.clear()
                    self.jitter.push(self._segment, self._seq, at_ms, packet)
                    self._seq += 1
                if self._seq:
                    self.jitter.end_segment(self._segment, self._seq)
                self._segment += 1
                self._seq = 0
                self._received = 0
            elif kind == "clear":
                self._pending.clear()
                self.jitter.clear()
                self._rows.clear()
                self._fifo.clear()
                self._first_in.clear()
                self.visemes.reset()
                if self.lips is not None:
                    self.lips.reset()
                    self._held.clear()
                    self._mels.clear()
                self._playing_segment = None
                self._segment += 1
                self._seq = 0
                self._received = 0
            elif kind == "say":
                audio, weights, on_start = data
                mels = None
                if self.lips is not None:  # the whole utterance is here: its windows at once
                    mels = mel_windows(audio.ravel(), self.engine.config.sample_rate,
                                       self.engine.config.fps)
                for i in range(len(weights)):
                    self._queue(_Row(weights[i], audio[i], at, i == len(weights) - 1,
                                     first_in=at if i == 0 else None,
                                     cue=on_start if i == 0 else None,
                                     mel=None if mels is None else
                                     mels[min(i, len(mels) - 1)]))

    def _rows_from_model(self, rows: np.ndarray, end: bool = False) -> None:
        for r in rows:
            if not self._fifo:
                break
            audio, pulled_at, first_in, stretch_s = self._fifo.popleft()
            self._queue(_Row(np.asarray(r, np.float32), audio, pulled_at,
                             first_in=first_in, stretch_s=stretch_s))
        if end:
            self._fifo.clear()
            last = self._held or self._rows
            if last:
                last[-1].segment_end = True
            if self.lips is not None:
                self._mels.extend(self.lips.flush())
                self._release(end=True)

    def _queue(self, row: _Row) -> None:
        if self.lips is None:
            self._rows.append(row)
        else:  # shown once its mel window is known (say() rows come with theirs)
            self._held.append(row)

    def _release(self, end: bool = False) -> None:
        """A neural session's held rows whose mel windows are known go to ``_rows``, in
        order. At a segment's end every row goes (one without a window, which a viseme model
        giving fewer rows than frames would leave, shows silence) and unused windows are
        dropped."""
        if self.lips is None:
            return
        self._mels.extend(self.lips.ready())
        while self._held:
            row = self._held[0]
            if row.mel is None:
                if self._mels:
                    row.mel = self._mels.popleft()
                elif end:
                    row.mel = SILENT_WINDOW
                else:
                    break
            self._rows.append(self._held.popleft())
        if end:
            self._mels.clear()


class AvatarEngine:
    """One per worker: shared model, compositor and tick thread for every session."""

    def __init__(self, avatar, config: EngineConfig | None = None, viseme_batcher=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``avatar``: the default :class:`~avatar_pipeline.avatar.AvatarAsset` of sessions.
        ``clock``: seconds, monotonic (tests drive the engine on a simulated clock)."""
        self.clock = clock
        from avatar_pipeline.visemes import SmoothingParams, VisemeBatcher

        self.config = cfg = config or EngineConfig()
        self._spf = cfg.samples_per_frame
        self._jitter_cfg = cfg.jitter or JitterConfig(packet_ms=1000.0 / cfg.fps)
        if abs(self._jitter_cfg.packet_ms - 1000.0 / cfg.fps) > 1e-6:
            raise ValueError("the jitter buffer's packet must be one frame period")
        # the one smoothing setting, as `avatar render` uses it (visemes.smoothing)
        self._smoothing = SmoothingParams(fps=cfg.fps) if cfg.smoothing else None
        self.batcher = viseme_batcher or VisemeBatcher(max_batch=cfg.max_batch)
        self.compositor = make_compositor(cfg.backend, fmt=cfg.fmt, max_batch=cfg.max_batch)
        # ModelSignatureError (a wrong or missing model) stops the caller here, at start
        self.neural = NeuralRenderer(cfg.neural_model) if cfg.neural_model else None
        self._neural: set[str] = set()  # avatars drawn by the neural renderer
        self._avatars: dict = {}
        self.default_avatar = self._add(avatar)
        self.width, self.height = avatar.width, avatar.height
        self._sessions: dict[str, EngineSession] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ticks = 0
        self.late_ticks = 0
        self.last_batch = 0
        self.max_batch_seen = 0

    # --- sessions -----------------------------------------------------------------------------
    def add_avatar(self, asset) -> str:
        with self._lock:
            return self._add(asset)

    def _add(self, asset) -> str:
        aid = self.compositor.add_avatar(asset)
        self._avatars[aid] = asset
        if asset.renderer == "neural":
            if self.neural is not None:
                self.neural.add_avatar(asset, key=aid)
                self._neural.add(aid)
            else:
                NEURAL_MISSING.inc()
                log.warning("engine.neural_unavailable", avatar_id=aid,
                            detail="this avatar asks for the neural renderer and this worker "
                                   "has no model (worker.neural_model): drawn with its sprites")
        return aid

    def is_neural(self, avatar_id: str) -> bool:
        return avatar_id in self._neural

    def remove_avatar(self, avatar_id: str) -> bool:
        """Free an avatar no open session shows (never the default); False if it stays."""
        with self._lock:
            if avatar_id == self.default_avatar or any(
                    s.avatar_id == avatar_id for s in self._sessions.values()):
                return False
            self._avatars.pop(avatar_id, None)
            self.compositor.avatars.pop(avatar_id, None)
            if avatar_id in self._neural:
                self._neural.discard(avatar_id)
                self.neural.remove_avatar(avatar_id)
            return True

    def open_session(self, on_frame: Callable[[OutputFrame], None], avatar_id: str | None = None,
                     session_id: str | None = None, seed: int | None = None,
                     render: bool = True) -> EngineSession:
        """A session; ``render=False`` gives frames with weights, blink and audio but no picture
        (nothing is composed for it: the cost of a visemes-only lesson is the model's)."""
        from avatar_pipeline.visemes import StreamingVisemes

        sid = session_id or f"s{next(self._ids)}"
        aid = avatar_id or self.default_avatar
        if aid not in self._avatars:
            raise KeyError(f"avatar {aid} is not loaded on this engine")
        s = EngineSession(
            engine=self, session_id=sid, avatar_id=aid, on_frame=on_frame,
            clock=SessionClock(seed if seed is not None else hash(sid) & 0xFFFF,
                               self._avatars[aid]),
            jitter=JitterBuffer(self._jitter_cfg, can_drop=is_silent, stretch=self._stretch),
            visemes=StreamingVisemes(self.config.fps, model=self.batcher.model,
                                     smoothing=self._smoothing),
            started_at=self.clock(), render=render,
            lips=MelStream(self.config.fps, self.config.sample_rate)
            if render and aid in self._neural else None,
        )
        with self._lock:
            if sid in self._sessions:
                raise ValueError(f"session {sid} is already open")
            self._sessions[sid] = s
            SESSIONS.set(len(self._sessions))
        log.info("engine.session_opened", session_id=sid, avatar_id=aid,
                 renderer="neural" if s.lips is not None else "sprite")
        return s

    def close_session(self, session_id: str) -> None:
        with self._lock:
            s = self._sessions.pop(session_id, None)
            SESSIONS.set(len(self._sessions))
        if s is not None:
            s.closed = True
            log.info("engine.session_closed", session_id=session_id, frames=s._frames_out,
                     underruns=s.jitter.stats.underruns)

    def _stretch(self, packets: list[np.ndarray], n_out: int,
                 after: np.ndarray | None) -> list[np.ndarray]:
        """The jitter buffer's time-stretch: speech played a little faster or slower."""
        return stretch_packets(packets, n_out, self.config.sample_rate, after)

    @property
    def sessions(self) -> list[EngineSession]:
        with self._lock:
            return list(self._sessions.values())

    # --- the tick -------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """One frame period for every session; returns how many frames were made (a session
        that does not render gets one without a picture)."""
        now = self.clock() if now is None else now
        now_ms = now * 1000.0
        sessions = self.sessions
        spf_bytes = self._spf * 2
        feed: list[tuple[EngineSession, np.ndarray]] = []
        for s in sessions:
            s._drain_inbox(spf_bytes)
            p = s.jitter.pull(now_ms)
            if p.kind in (Pull.PLAY, Pull.CONCEAL) or (
                    p.kind is Pull.UNDERRUN and s._playing_segment is not None):
                if p.segment != s._playing_segment and s._playing_segment is not None:
                    s._rows_from_model(s.visemes.flush(), end=True)  # previous segment ended
                first_in = None
                if p.segment != s._playing_segment:
                    first_in = s._first_in.pop(p.segment, None)
                    for old in [k for k in s._first_in if k < p.segment]:
                        del s._first_in[old]  # segments dropped unplayed
                s._playing_segment = p.segment
                audio = p.payload if p.kind is Pull.PLAY else np.zeros(self._spf, np.int16)
                if p.kind is Pull.UNDERRUN and p.seq is not None:
                    UNDERRUNS.inc()
                # an underrun plays nothing: the model hears silence, nobody hears filler, and
                # the runner's playback position counts only speech that really played (a slot
                # concealed on trial may be a stall's start: it is not counted either)
                silent = p.kind is Pull.UNDERRUN or p.trial
                s._fifo.append((None if silent else audio, now, first_in,
                                p.stretch_ms / 1000.0))
                feed.append((s, audio))
                if s.lips is not None:
                    s.lips.push(audio)
            elif s._playing_segment is not None:  # IDLE: the segment is over
                s._rows_from_model(s.visemes.flush(), end=True)
                s._playing_segment = None
        if feed:
            rows = self.batcher.push_many([(s.visemes, a, self.config.sample_rate)
                                           for s, a in feed])
            for (s, _), r in zip(feed, rows, strict=True):
                s._rows_from_model(r)

        states, shown = [], []
        for s in sessions:
            s._release()
            row = s._rows.popleft() if s._rows else None
            t = now - s.started_at
            w = row.weights if row is not None else SILENT
            states.append(s.clock.state(s.avatar_id, w, t))
            shown.append(row)
        if not states:
            return 0
        drawn = [i for i, s in enumerate(sessions) if s.render]
        batch = self.compositor.compose([states[i] for i in drawn]) if drawn else None
        slot = {i: k for k, i in enumerate(drawn)}
        if batch is not None and self.neural is not None:
            self._repaint(batch, [(i, slot[i]) for i in drawn if sessions[i].lips is not None],
                          sessions, states, shown)
        self.last_batch = len(drawn)
        self.max_batch_seen = max(self.max_batch_seen, len(drawn))
        BATCH.observe(len(drawn))
        LAST_BATCH.set(len(drawn))
        done = self.clock()
        for i, (s, row) in enumerate(zip(sessions, shown, strict=True)):
            latency = None if row is None else done - row.pulled_at
            if latency is not None:
                FRAME_LATENCY.observe(latency)
            start = None if row is None or row.first_in is None else done - row.first_in
            if start is not None:
                SPEECH_START.observe(start)
                log.info("engine.speech_started", session_id=s.session_id,
                         start_ms=round(start * 1000, 1))
            frame = OutputFrame(
                index=s._frames_out,
                video=bytes(batch.data(slot[i])) if i in slot else b"", width=self.width,
                height=self.height, fmt=self.config.fmt,
                audio=None if row is None else row.audio,
                weights=states[i].weights, blink=float(states[i].blink),
                segment_end=bool(row and row.segment_end),
                latency_s=latency, speech_start_s=start, tick_at=now,
                cue=None if row is None else row.cue,
                stretch_s=0.0 if row is None else row.stretch_s)
            s._frames_out += 1
            try:
                s.on_frame(frame)
            except Exception:  # one session's consumer must not stop the others
                log.exception("engine.on_frame_failed", session_id=s.session_id)
        return len(states)

    def _repaint(self, batch, picks, sessions, states, shown) -> None:
        """One neural-model call for every neural session's frame of this tick."""
        if not picks:
            return
        buf = batch.numpy()
        mels = np.stack([shown[i].mel if shown[i] is not None and shown[i].mel is not None
                         else SILENT_WINDOW for i, _ in picks])
        ids = [sessions[i].avatar_id for i, _ in picks]
        offsets = [head_offset(self._avatars[sessions[i].avatar_id], states[i].t,
                               states[i].idle_phase) for i, _ in picks]
        self.neural.repaint([buf[k] for _, k in picks], self.config.fmt, self.width,
                            self.height, mels, ids, offsets)
        NEURAL_FRAMES.inc(len(picks))

    # --- the thread -----------------------------------------------------------------------
    def start(self) -> AvatarEngine:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="avatar-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        period = 1.0 / self.config.fps
        next_at = self.clock()
        while not self._stop.is_set():
            start = self.clock()
            if start - next_at > period:
                self.late_ticks += 1
                TICKS.labels("late").inc()
                next_at = start  # restart the schedule: never burst to catch up
            try:
                with TICK_SECONDS.time():
                    self.tick(start)
                TICKS.labels("ok").inc()
            except Exception:
                TICKS.labels("error").inc()
                log.exception("engine.tick_failed")
            self.ticks += 1
            next_at += period
            delay = next_at - self.clock()
            if delay > 0:
                self._stop.wait(delay)

    def __enter__(self) -> AvatarEngine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            for s in self.sessions:
                self.close_session(s.session_id)
