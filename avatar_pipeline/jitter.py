"""Adaptive playout (jitter) buffer for network speech audio, in the spirit of WebRTC's NetEq.

Audio reaches the worker as packets of ``packet_ms`` (20 ms) inside speech *segments* (one
``lk.audio_stream`` byte stream each). The buffer is pulled once per ``packet_ms`` by the output
clock and answers with one of:

* ``PLAY``      - the next packet of the current segment;
* ``CONCEAL``   - the next packet is missing but later ones are here: conceal it (counted as a
                  loss; if it turns up afterwards it is dropped as late);
* ``UNDERRUN``  - speech of the current segment is due but the buffer holds none of it: play
                  silence and wait until it refills (counted once per stall);
* ``IDLE``      - no speech is due (between segments; never an underrun).

**Target delay.** For every arriving packet the buffer computes its *relative delay*: how much
later it came than the fastest packet of its segment would predict
(``arrival - seq * packet_ms - min(arrival - seq * packet_ms)``). Packets that arrive faster than
real time (TTS pushed at 5x) each set a new minimum, so a burst counts as zero jitter; only
lateness counts. The adaptive target is a high percentile of the recent relative delays plus a
one-packet margin, clamped to ``[min_ms, max_ms]``; a segment starts playing ``target`` after its
first packet arrives, or as soon as it holds ``target`` of audio in a row (or all of itself, if
shorter), or ``min_ms`` of audio that is coming at least 2.5 times as fast as real time, whichever comes
first: a burst carries the cushion the wait would build. The fixed configuration of seed 003 (:data:`SEED_FIXED`) ignores the
statistics.

**Catching up.** After a stall the playout runs late. While the delay of the next packet exceeds
the target by more than ``catchup_hysteresis_ms`` and enough audio is buffered, every
``catchup_every``-th packet is dropped (a 1/``catchup_every`` time compression), so a stall costs
a few seconds of slightly faster speech instead of a permanent delay. Only time lost to stalls is
recovered this way, plus, in a stream longer than ``catchup_after_ms``, the excess over a target
that has come down; a short segment that arrived early (a TTS sentence) is never compressed.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Pull(enum.Enum):
    PLAY = "play"
    CONCEAL = "conceal"
    UNDERRUN = "underrun"
    IDLE = "idle"


@dataclass(frozen=True)
class JitterConfig:
    packet_ms: float = 20.0
    initial_ms: float = 128.0  # target before any statistics (and the fixed start delay)
    min_ms: float = 40.0  # the target never goes below; never resume with less buffered
    max_ms: float = 240.0  # the target never goes above
    refill: float = 0.30  # after an underrun, resume once refill * target is buffered
    adaptive: bool = True
    fixed_target_ms: float = 160.0  # the target when not adaptive
    percentile: float = 97.0
    margin_ms: float = 20.0  # added to the percentile (one packet of headroom)
    window: int = 1500  # relative delays remembered (packets; 30 s at 20 ms)
    catchup_hysteresis_ms: float = 20.0
    catchup_every: int = 4  # drop one packet in four while catching up (0 = never)
    catchup_after_ms: float = 10_000.0  # a stream this long may also follow a lower target
    burst_ratio: float = 2.5  # a segment arriving this much faster than real time starts early

    def __post_init__(self) -> None:
        if not (0 < self.packet_ms and 0 <= self.min_ms <= self.max_ms):
            raise ValueError("need packet_ms > 0 and 0 <= min_ms <= max_ms")
        if not 0 < self.refill <= 1 or not 0 < self.percentile <= 100:
            raise ValueError("refill must be in (0, 1] and percentile in (0, 100]")


SEED_FIXED = JitterConfig(adaptive=False, fixed_target_ms=160.0, initial_ms=128.0, min_ms=40.0,
                          max_ms=240.0, refill=0.30, catchup_every=4, margin_ms=0.0)
"""Seed 003's fixed settings: target 160 ms, min playback 40 ms, initial 128 ms, max 240 ms,
refill at 30 %."""


@dataclass
class JitterStats:
    played: int = 0
    concealed: int = 0  # missing packets concealed (lost, or later dropped as late)
    late_dropped: int = 0  # packets that arrived after their slot was concealed
    catchup_dropped: int = 0  # packets dropped to catch up after a stall
    underruns: int = 0
    duplicates: int = 0


@dataclass
class _Segment:
    sid: int
    first_arrival_ms: float  # arrival of the first packet that came in
    anchor_ms: float  # min(arrival - seq * packet_ms): the fastest packet's timeline
    packets: dict[int, tuple[float, Any]] = field(default_factory=dict)
    n_packets: int | None = None  # known once the segment is closed
    seq0_arrival_ms: float | None = None
    start_at_ms: float | None = None
    next_seq: int = 0
    since_drop: int = 0
    slip_ms: float = 0.0  # playout time lost to stalls, not yet recovered
    received_ms: float = 0.0  # audio received so far, whole packets or not (see received())

    @property
    def t0(self) -> float:
        """Reference for added delay: arrival of packet 0 (or the first that came)."""
        return self.seq0_arrival_ms if self.seq0_arrival_ms is not None else self.first_arrival_ms

    def buffered(self) -> int:
        return sum(1 for s in self.packets if s >= self.next_seq)

    def done(self) -> bool:
        return self.n_packets is not None and self.next_seq >= self.n_packets


@dataclass
class Pulled:
    kind: Pull
    segment: int | None = None
    seq: int | None = None
    payload: Any = None
    delay_ms: float | None = None  # added delay of a played packet


class JitterBuffer:
    """One stream's buffer. ``push`` on arrival, ``pull`` once per packet period."""

    def __init__(self, config: JitterConfig | None = None,
                 can_drop: Callable[[Any], bool] | None = None) -> None:
        """``can_drop(payload)``: may this packet be dropped to catch up? (e.g. only silence,
        so a stall costs a shorter pause, never words). None: any packet may be."""
        self.cfg = config or JitterConfig()
        self._can_drop = can_drop
        self.stats = JitterStats()
        self._rel: deque[float] = deque(maxlen=self.cfg.window)
        self._target = self.cfg.initial_ms if self.cfg.adaptive else self.cfg.fixed_target_ms
        self._segments: dict[int, _Segment] = {}
        self._order: deque[int] = deque()  # segment ids in arrival order
        self._current: _Segment | None = None
        self._stalled = False
        self._since_target = 0

    # -- input -----------------------------------------------------------------------------
    @property
    def target_ms(self) -> float:
        return self._target

    def push(self, segment: int, seq: int, arrival_ms: float, payload: Any = None) -> None:
        """A packet arrived. Late packets (their slot already passed) are dropped and counted."""
        seg = self._segments.get(segment)
        if seg is None:
            if self._current is not None and segment == self._current.sid:
                seg = self._current
            else:
                seg = _Segment(segment, arrival_ms, arrival_ms - seq * self.cfg.packet_ms)
                self._segments[segment] = seg
                self._order.append(segment)
        if seq < seg.next_seq:
            self.stats.late_dropped += 1
            return
        if seq in seg.packets:
            self.stats.duplicates += 1
            return
        seg.packets[seq] = (arrival_ms, payload)
        if seq == 0:
            seg.seq0_arrival_ms = arrival_ms
        timeline = arrival_ms - seq * self.cfg.packet_ms
        seg.anchor_ms = min(seg.anchor_ms, timeline)
        self._rel.append(timeline - seg.anchor_ms)
        self._since_target += 1
        if self.cfg.adaptive and (self._since_target >= 10 or len(self._rel) < 50):
            self._update_target()

    def received(self, segment: int, total_ms: float) -> None:
        """How much audio of the segment has come in so far, including a packet still being
        filled (a caller that cuts a stream into packets knows); it tells a burst sooner."""
        seg = self._segments.get(segment)
        if seg is None and self._current is not None and self._current.sid == segment:
            seg = self._current
        if seg is not None:
            seg.received_ms = max(seg.received_ms, total_ms)

    def end_segment(self, segment: int, n_packets: int) -> None:
        """The segment's stream closed after ``n_packets`` packets (stall or trailer loss: the
        caller closes it with what it got)."""
        seg = self._segments.get(segment)
        if seg is None and self._current is not None and self._current.sid == segment:
            seg = self._current
        if seg is not None:
            seg.n_packets = n_packets

    def clear(self) -> None:
        """Drop everything queued (interruption): the current segment ends now."""
        self._segments.clear()
        self._order.clear()
        self._current = None
        self._stalled = False

    def _update_target(self) -> None:
        self._since_target = 0
        if len(self._rel) < 20:
            return
        p = float(np.percentile(np.fromiter(self._rel, float, len(self._rel)), self.cfg.percentile))
        self._target = min(self.cfg.max_ms, max(self.cfg.min_ms, p + self.cfg.margin_ms))

    # -- output ----------------------------------------------------------------------------
    def pull(self, now_ms: float) -> Pulled:
        seg = self._current
        if seg is None or seg.done():
            seg = self._current = self._next_segment(now_ms)
            if seg is None:
                return Pulled(Pull.IDLE)
        if now_ms < seg.start_at_ms:
            if not (self.cfg.adaptive and self._ready(seg, now_ms)):
                return Pulled(Pull.IDLE, seg.sid)
            seg.start_at_ms = now_ms  # a burst already holds the target: start now
        if seg.n_packets is not None and seg.buffered() == 0:
            # Closed, and nothing more will come: the missing tail is lost, not late.
            self.stats.concealed += seg.n_packets - seg.next_seq
            seg.next_seq = seg.n_packets
            self._stalled = False
            return self.pull(now_ms)

        if self._stalled:
            need = max(self.cfg.min_ms, self.cfg.refill * self._target) / self.cfg.packet_ms
            remaining = None if seg.n_packets is None else seg.n_packets - seg.next_seq
            have = seg.buffered()
            if have < math.ceil(need) and (remaining is None or have < remaining):
                seg.slip_ms += self.cfg.packet_ms
                return Pulled(Pull.UNDERRUN, seg.sid)
            self._stalled = False

        self._maybe_catch_up(seg, now_ms)
        seq = seg.next_seq
        if seq in seg.packets:
            _, payload = seg.packets.pop(seq)
            seg.next_seq += 1
            self.stats.played += 1
            return Pulled(Pull.PLAY, seg.sid, seq, payload, now_ms - (seg.t0 + seq * self.cfg.packet_ms))
        if seg.buffered() > 0:
            seg.next_seq += 1
            self.stats.concealed += 1
            return Pulled(Pull.CONCEAL, seg.sid, seq)
        self._stalled = True
        seg.slip_ms += self.cfg.packet_ms
        self.stats.underruns += 1
        return Pulled(Pull.UNDERRUN, seg.sid, seq)

    def _ready(self, seg: _Segment, now_ms: float) -> bool:
        """May the segment start before its target delay is out? Yes when it already holds
        ``target`` of audio in a row (or all of itself), or when it is arriving at least
        ``burst_ratio`` times faster than real time and holds ``min_ms``: audio pushed faster
        than real time (a TTS burst) builds the cushion the wait would buy, and faster."""
        need = max(1, math.ceil(self._target / self.cfg.packet_ms - 1e-9))
        seq = seg.next_seq
        while seq in seg.packets and seq - seg.next_seq < need:
            seq += 1
        have = seq - seg.next_seq
        if have >= need or (seg.n_packets is not None and seq >= seg.n_packets):
            return True
        have_ms = have * self.cfg.packet_ms
        came_ms = max(seg.received_ms, (seg.next_seq + have) * self.cfg.packet_ms)
        return (self.cfg.burst_ratio > 0 and have_ms >= max(self.cfg.min_ms, self.cfg.packet_ms)
                and came_ms >= self.cfg.burst_ratio * (now_ms - seg.first_arrival_ms))

    def _maybe_catch_up(self, seg: _Segment, now_ms: float) -> None:
        every = self.cfg.catchup_every
        if not every:
            return
        seg.since_drop += 1
        # Only time we lost to stalls, or a long stream following a lower target, is recovered:
        # a short segment that merely started early (a TTS sentence) is never compressed.
        long_stream = seg.next_seq * self.cfg.packet_ms > self.cfg.catchup_after_ms
        if seg.slip_ms <= 0 and not long_stream:
            return
        delay = now_ms - (seg.t0 + seg.next_seq * self.cfg.packet_ms)
        ahead = seg.buffered() * self.cfg.packet_ms
        if (seg.since_drop >= every and delay > self._target + self.cfg.catchup_hysteresis_ms
                and ahead > self._target and seg.next_seq in seg.packets
                and (self._can_drop is None or self._can_drop(seg.packets[seg.next_seq][1]))):
            seg.packets.pop(seg.next_seq)
            seg.next_seq += 1
            seg.since_drop = 0
            seg.slip_ms = max(0.0, seg.slip_ms - self.cfg.packet_ms)
            self.stats.catchup_dropped += 1

    def _next_segment(self, now_ms: float) -> _Segment | None:
        while self._order:
            seg = self._segments.pop(self._order.popleft())
            if seg.done():
                continue
            seg.start_at_ms = max(now_ms, seg.first_arrival_ms + (
                self._target if self.cfg.adaptive else self.cfg.initial_ms))
            self._stalled = False
            return seg
        return None


@dataclass
class TraceResult:
    name: str
    config: str
    underruns: int
    minutes: float
    delays_ms: np.ndarray
    stats: JitterStats
    target_ms: np.ndarray  # target over time (one sample per second)

    @property
    def underruns_per_10min(self) -> float:
        return self.underruns * 10.0 / self.minutes

    def summary(self) -> dict[str, float | int | str]:
        d = self.delays_ms
        return {
            "trace": self.name, "config": self.config,
            "underruns": self.underruns, "underruns_per_10min": round(self.underruns_per_10min, 2),
            "delay_median_ms": round(float(np.median(d)), 1),
            "delay_p95_ms": round(float(np.percentile(d, 95)), 1),
            "played": self.stats.played, "concealed": self.stats.concealed,
            "late_dropped": self.stats.late_dropped,
            "catchup_dropped": self.stats.catchup_dropped,
        }


def replay_trace(arrival_ms: list[float | None], segment: list[int], config: JitterConfig,
                 name: str = "trace", config_name: str = "") -> TraceResult:
    """Replay a trace (see shared/traces/README.md) on a simulated clock.

    Packet k arrives at ``arrival_ms[k]`` (None = lost); the playout clock pulls every
    ``packet_ms``; a segment is closed when its last packet (in index order) has arrived or, if
    lost, when the next segment's first packet arrives.
    """
    pms = config.packet_ms
    buf = JitterBuffer(config)
    # per-segment sequence numbers and sizes
    seqs: list[int] = []
    sizes: dict[int, int] = {}
    for s in segment:
        seqs.append(sizes.get(s, 0))
        sizes[s] = sizes.get(s, 0) + 1
    events = sorted((t, k) for k, t in enumerate(arrival_ms) if t is not None)
    arrived_count: dict[int, int] = {}
    lost_count = {s: 0 for s in sizes}
    for t, s in zip(arrival_ms, segment, strict=True):
        if t is None:
            lost_count[s] += 1
    delays: list[float] = []
    targets: list[float] = []
    ei, now = 0, 0.0
    end = events[-1][0] + 60_000.0
    while now <= end:
        while ei < len(events) and events[ei][0] <= now:
            t, k = events[ei]
            s = segment[k]
            buf.push(s, seqs[k], t, None)
            arrived_count[s] = arrived_count.get(s, 0) + 1
            if arrived_count[s] + lost_count[s] == sizes[s]:
                buf.end_segment(s, sizes[s])  # stream closed: everything that will come is in
            ei += 1
        p = buf.pull(now)
        if p.kind is Pull.PLAY:
            delays.append(p.delay_ms)
        if int(now) % 1000 == 0:
            targets.append(buf.target_ms)
        if ei >= len(events) and p.kind is Pull.IDLE and buf._current is None:
            break
        now += pms
    minutes = (events[-1][0] - events[0][0]) / 60_000.0
    return TraceResult(name, config_name, buf.stats.underruns, minutes, np.asarray(delays),
                       buf.stats, np.asarray(targets))
