"""Adaptive playout (jitter) buffer for network speech audio, in the spirit of WebRTC's NetEq.

Audio reaches the worker as packets of ``packet_ms`` (one video frame period) inside speech
*segments* (one ``lk.audio_stream`` byte stream each). The buffer is pulled once per
``packet_ms`` by the output clock and answers with one of:

* ``PLAY``      - the next packet of the current segment (possibly time-stretched, see below);
* ``CONCEAL``   - the next packet is missing but later ones are here: conceal it (counted as
                  lost, or as *late* if it turns up afterwards: NetEq's "expand");
* ``UNDERRUN``  - speech of the current segment is due but the buffer holds none of it: play
                  silence and wait until it refills (counted once per stall);
* ``IDLE``      - no speech is due (between segments; never an underrun).

**Target delay.** For every arriving packet, late ones included, the buffer computes its
*relative delay*: how much later it came than the fastest packet of the last
``anchor_window_ms`` would predict (``arrival - seq * packet_ms - min(...)``). Packets that
arrive faster than real time (TTS pushed at 5x) each set a new minimum, so a burst counts as
zero jitter, and a sender clock that runs slow or fast moves the minimum with it. The relative
delays go into a histogram that forgets with a time constant of ``forget_ms`` (NetEq's delay
histogram); the target is its ``quantile`` plus a margin. A packet that arrives after its slot
was concealed, or later than that target, is a *peak* (packets within a second of each other,
one stall's burst, are one peak); once ``peak_count`` peaks came within ``peak_hold_ms`` the
target holds a peak's height until they stop for ``peak_hold_ms`` (NetEq's peak detector).
Which of the held peaks' heights is held follows what actually came late: the highest at first,
then lower while packets keep coming in time, higher on each late one, so about
``late_budget`` of the packets come late (a network whose spikes are random cannot be
outguessed; holding the highest spike of the last 20 s buys a late rate far under the budget
at a longer delay). The target is clamped to ``[min_ms, max_ms]``.

**Following the target without stalls.** The playout delay of the next slot behind the
fastest packet's timeline is steered to the target by time-stretching, not by waiting for an
underrun: below ``target - hysteresis_ms / 2`` with less than the target in hand, up to
``stretch_in - 1`` packets play as one more (NetEq's preemptive expand) or a silent packet is
repeated; above ``target + packet_ms + hysteresis_ms / 2`` (so one packet less still leaves it
above the target), ``stretch_in`` packets, or 3 if fewer are in hand, play as one fewer
(accelerate) or a silent packet is dropped. Only time lost to stalls and expansions is taken
back, plus, in a real-time stream longer than ``catchup_after_ms``, the excess over a target
that came down or from a fast sender clock: audio that merely came early (a TTS sentence) is
never compressed. Without a ``stretch`` function (or with ``stretch=False``) nothing slows down
and catching up drops packets ``can_drop`` allows (the seed's behaviour).

**Loss or stall?** An empty buffer looks the same for both. Concealing on trial keeps time
(a loss, once a later packet comes); if the missing packet comes first, or nothing comes for
``trial_max_ms``, it was a stall: the trial slots become the stall's silence (one underrun).

**Start and refill.** A segment starts playing ``target`` after its first packet arrives, or as
soon as it holds ``target`` of audio in a row (or all of itself, if shorter), or ``min_ms`` (and
two packets) of audio that is coming at least ``burst_ratio`` times as fast as real time: a
burst carries the cushion the wait would build. After an underrun it resumes once it holds
``refill * target`` (1.0: it lands on the target in one step instead of stalling again and
again on a ramp). The fixed configuration of seed 003 (:data:`SEED_FIXED`) ignores the
statistics, does not conceal on trial and does not stretch.
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
    initial_ms: float = 120.0  # target before any statistics (and the fixed start delay)
    min_ms: float = 40.0  # the target never goes below; never resume with less buffered
    max_ms: float = 400.0  # the target never goes above
    refill: float = 1.0  # after an underrun, resume once refill * target is buffered
    adaptive: bool = True
    fixed_target_ms: float = 160.0  # the target when not adaptive
    quantile: float = 0.97
    forget_ms: float = 30_000.0  # the delay histogram's memory (time constant)
    margin_ms: float = 20.0  # added to the quantile
    peak_hold_ms: float = 20_000.0
    peak_count: int = 2  # late packets within peak_hold_ms that make the target hold a peak
    peak_quantile: float = 1.0  # which of the held peaks' heights the target holds (1: highest)
    # The share of packets allowed to come after their slot was concealed: each late packet
    # moves the held peak's quantile up by late_step, each packet on time down by
    # late_step * late_budget / (1 - late_budget), so it settles where that share comes late
    # (a Robbins-Monro quantile tracker). 0: the quantile stays at peak_quantile.
    late_budget: float = 0.0025
    late_step: float = 0.1
    hysteresis_ms: float = 20.0
    anchor_window_ms: float = 1_000.0  # the fastest packet is looked for this far back
    trial_conceal: bool = True  # an empty buffer conceals on trial before it calls a stall
    trial_max_ms: float = 200.0  # ...for at most this long (a burst of loss); then it is one
    stretch: bool = True  # follow the target by time-stretching (needs a stretch function)
    stretch_in: int = 4  # accelerate: 4 packets play as 3; expand: 3 play as 4
    catchup_after_ms: float = 10_000.0  # a stream this long may also follow a lower target
    burst_ratio: float = 2.5  # a segment arriving this much faster than real time starts early

    def __post_init__(self) -> None:
        if not (0 < self.packet_ms and 0 <= self.min_ms <= self.max_ms):
            raise ValueError("need packet_ms > 0 and 0 <= min_ms <= max_ms")
        if not 0 < self.refill <= 1 or not 0 < self.quantile <= 1:
            raise ValueError("refill must be in (0, 1] and quantile in (0, 1]")
        if not (0 <= self.late_budget < 0.5 and 0 <= self.peak_quantile <= 1
                and 0 < self.late_step <= 1):
            raise ValueError("need 0 <= late_budget < 0.5, 0 <= peak_quantile <= 1 and "
                             "0 < late_step <= 1")
        if self.stretch_in < 2:
            raise ValueError("stretch_in must be at least 2")


SEED_FIXED = JitterConfig(adaptive=False, fixed_target_ms=160.0, initial_ms=128.0, min_ms=40.0,
                          max_ms=240.0, refill=0.30, stretch=False, stretch_in=4, margin_ms=0.0,
                          anchor_window_ms=float("inf"), trial_conceal=False, late_budget=0.0)
"""Seed 003's fixed settings: target 160 ms, min playback 40 ms, initial 128 ms, max 240 ms,
refill at 30 %, catch-up by dropping one packet in four."""


@dataclass
class JitterStats:
    played: int = 0  # packets played (stretched ones count as what came out)
    concealed: int = 0  # slots concealed: lost packets plus late ones
    late: int = 0  # packets that arrived after their slot was concealed
    underruns: int = 0
    duplicates: int = 0
    speech_dropped: int = 0  # packets of speech dropped whole to catch up (the goal: none)
    silence_dropped: int = 0  # silent packets dropped to catch up
    accelerated: int = 0  # packets saved by time compression
    expanded: int = 0  # packets added by time expansion (or a repeated silent packet)

    @property
    def slots(self) -> int:
        return self.played + self.concealed

    @property
    def late_pct(self) -> float:
        """Late-concealed slots, % of all slots (NetEq's expand rate for late packets)."""
        return 100.0 * self.late / max(1, self.slots)


@dataclass
class _Segment:
    sid: int
    first_arrival_ms: float  # arrival of the first packet that came in
    anchor_ms: float  # min(arrival - seq * packet_ms) over the last anchor_window_ms
    packets: dict[int, tuple[float, Any]] = field(default_factory=dict)
    n_packets: int | None = None  # known once the segment is closed
    seq0_arrival_ms: float | None = None
    start_at_ms: float | None = None
    next_seq: int = 0
    since_drop: int = 0
    slip_ms: float = 0.0  # playout time added by stalls and expansions, not yet recovered
    received_ms: float = 0.0  # audio received so far, whole packets or not (see received())
    concealed: set[int] = field(default_factory=set)  # slots concealed (a late packet is late)
    out: deque = field(default_factory=deque)  # stretched packets ready: (payload, position)
    tentative: int | None = None  # first slot concealed on trial while the buffer ran dry
    recent: deque = field(default_factory=deque)  # (arrival, seq) within anchor_window_ms

    def observe(self, seq: int, arrival_ms: float, packet_ms: float, window_ms: float) -> None:
        """Track the fastest packet's timeline over a recent window: a sender clock that runs
        slow or fast moves it, so drift is followed instead of read as jitter."""
        self.recent.append((arrival_ms, seq))
        while self.recent and self.recent[0][0] < arrival_ms - window_ms:
            self.recent.popleft()
        self.anchor_ms = min(a - q * packet_ms for a, q in self.recent)

    def arrival_rate(self, packet_ms: float) -> float:
        """Audio received per unit of time lately (1.0: real time; a TTS burst: 5)."""
        if len(self.recent) < 2:
            return 1.0
        (a0, q0), (a1, q1) = self.recent[0], self.recent[-1]
        return (q1 - q0) * packet_ms / max(1e-3, a1 - a0)

    @property
    def t0(self) -> float:
        """Reference for added delay: arrival of packet 0 (or the first that came)."""
        return self.seq0_arrival_ms if self.seq0_arrival_ms is not None else self.first_arrival_ms

    def buffered(self) -> int:
        return sum(1 for s in self.packets if s >= self.next_seq)

    def in_row(self, limit: int | None = None) -> int:
        """Packets in a row from the next slot (the audio playable without a gap)."""
        seq = self.next_seq
        while seq in self.packets and (limit is None or seq - self.next_seq < limit):
            seq += 1
        return seq - self.next_seq

    def done(self) -> bool:
        return not self.out and self.n_packets is not None and self.next_seq >= self.n_packets


@dataclass
class Pulled:
    kind: Pull
    segment: int | None = None
    seq: int | None = None
    payload: Any = None
    delay_ms: float | None = None  # added delay of a played packet (from packet 0's arrival)
    wait_ms: float | None = None  # how long the played audio waited in the buffer
    trial: bool = False  # a concealment on trial: it may yet turn out to be part of a stall
    stretch_ms: float = 0.0  # playout time this packet adds (+) or saves (-) by stretching


class DelayEstimator:
    """The target delay: a forgetting histogram's quantile of relative delays, held up by
    recurring late packets (peaks)."""

    BIN_MS = 5.0
    PEAK_MERGE_MS = 1_000.0  # delays above the statistics this close together: one peak

    def __init__(self, cfg: JitterConfig) -> None:
        self.cfg = cfg
        self._hist = np.zeros(int(cfg.max_ms / self.BIN_MS) + 2)
        self._forget = math.exp(-cfg.packet_ms / cfg.forget_ms)
        self._n = 0
        self._peaks: deque[tuple[float, float]] = deque()  # (arrival, relative delay)
        self.peak_quantile = cfg.peak_quantile  # moved by late packets toward the late budget
        self._down = (cfg.late_step * cfg.late_budget / (1.0 - cfg.late_budget)
                      if cfg.late_budget else 0.0)
        self.target_ms = cfg.initial_ms if cfg.adaptive else cfg.fixed_target_ms

    def observe(self, rel_ms: float, now_ms: float, late: bool) -> None:
        if not self.cfg.adaptive:
            return
        self._hist *= self._forget
        self._hist[min(len(self._hist) - 1, int(max(0.0, rel_ms) / self.BIN_MS))] += 1.0
        self._n += 1
        if self._down:
            self.peak_quantile = (min(1.0, self.peak_quantile + self.cfg.late_step) if late
                                  else max(0.0, self.peak_quantile - self._down))
        if late or (self._n >= 20 and rel_ms > self._quantile_target()):
            # A peak: consecutive packets above the statistics (one stall's burst) are one event.
            if self._peaks and now_ms - self._peaks[-1][0] < self.PEAK_MERGE_MS:
                self._peaks[-1] = (self._peaks[-1][0], max(self._peaks[-1][1], rel_ms))
            else:
                self._peaks.append((now_ms, rel_ms))
        self._update(now_ms)

    def _quantile_target(self) -> float:
        cum = np.cumsum(self._hist)
        i = int(np.searchsorted(cum, self.cfg.quantile * cum[-1]))
        return (i + 1) * self.BIN_MS + self.cfg.margin_ms

    def tick(self, now_ms: float) -> None:
        """Let held peaks expire with time, not only with arrivals."""
        if self._peaks and now_ms - self._peaks[-1][0] > self.cfg.peak_hold_ms:
            self._update(now_ms)

    def _update(self, now_ms: float) -> None:
        cfg = self.cfg
        if self._n < 20:
            return
        while self._peaks and now_ms - self._peaks[0][0] > cfg.peak_hold_ms:
            self._peaks.popleft()
        target = self._quantile_target()
        if len(self._peaks) >= cfg.peak_count:
            heights = np.fromiter((r for _, r in self._peaks), float, len(self._peaks))
            target = max(target, float(np.quantile(heights, self.peak_quantile))
                         + cfg.margin_ms)
        self.target_ms = min(cfg.max_ms, max(cfg.min_ms, target))


Stretch = Callable[[list[Any], int, Any], list[Any]]


class JitterBuffer:
    """One stream's buffer. ``push`` on arrival, ``pull`` once per packet period."""

    def __init__(self, config: JitterConfig | None = None,
                 can_drop: Callable[[Any], bool] | None = None,
                 stretch: Stretch | None = None) -> None:
        """``can_drop(payload)``: is this packet silence (may it be dropped or repeated rather
        than stretched)? None: any packet may be dropped. ``stretch(payloads, n_out, after)``:
        the payloads as ``n_out`` packets, ``after`` the packet that follows (or None)."""
        self.cfg = config or JitterConfig()
        self._can_drop = can_drop
        self._stretch = stretch if self.cfg.stretch else None
        self.stats = JitterStats()
        self._est = DelayEstimator(self.cfg)
        self._segments: dict[int, _Segment] = {}
        self._order: deque[int] = deque()  # segment ids in arrival order
        self._current: _Segment | None = None
        self._retired = -1  # highest segment id played out or cleared (ids only grow)
        self._stalled = False

    # -- input -----------------------------------------------------------------------------
    @property
    def target_ms(self) -> float:
        return self._est.target_ms

    def _segment(self, segment: int) -> _Segment | None:
        seg = self._segments.get(segment)
        if seg is None and self._current is not None and self._current.sid == segment:
            seg = self._current
        return seg

    def push(self, segment: int, seq: int, arrival_ms: float, payload: Any = None) -> None:
        """A packet arrived. Late packets (their slot already passed) are dropped and counted,
        and they raise the target."""
        pms = self.cfg.packet_ms
        seg = self._segment(segment)
        if seg is None and segment <= self._retired:
            self.stats.late += 1  # its segment is over: its slot was concealed or cut
            return
        if seg is None:
            seg = _Segment(segment, arrival_ms, arrival_ms - seq * pms)
            self._segments[segment] = seg
            self._order.append(segment)
        timeline = arrival_ms - seq * pms
        if seg.tentative is not None and seg.tentative <= seq < seg.next_seq:
            # A slot concealed on trial came after all, before anything later: the stream
            # stalled there (the trial slots before it were lost). Rewind and wait for it.
            self._rewind(seg, seq)
            if seg is self._current:
                self._stalled = True
        if seq < seg.next_seq or seq in seg.packets:
            if seq in seg.concealed:
                seg.concealed.discard(seq)
                self.stats.late += 1
                self._est.observe(timeline - seg.anchor_ms, arrival_ms, late=True)
            else:
                self.stats.duplicates += 1
            return
        seg.packets[seq] = (arrival_ms, payload)
        if seq == 0:
            seg.seq0_arrival_ms = arrival_ms
        seg.observe(seq, arrival_ms, pms, self.cfg.anchor_window_ms)
        self._est.observe(timeline - seg.anchor_ms, arrival_ms, late=False)

    def received(self, segment: int, total_ms: float) -> None:
        """How much audio of the segment has come in so far, including a packet still being
        filled (a caller that cuts a stream into packets knows); it tells a burst sooner."""
        seg = self._segment(segment)
        if seg is not None:
            seg.received_ms = max(seg.received_ms, total_ms)

    def end_segment(self, segment: int, n_packets: int) -> None:
        """The segment's stream closed after ``n_packets`` packets (stall or trailer loss: the
        caller closes it with what it got)."""
        seg = self._segment(segment)
        if seg is not None:
            seg.n_packets = n_packets
            if seg.next_seq > n_packets:  # slots concealed on trial past the end: none
                extra = [q for q in seg.concealed if q >= n_packets]
                seg.concealed.difference_update(extra)
                self.stats.concealed -= len(extra)
                seg.next_seq = n_packets

    def clear(self) -> None:
        """Drop everything queued (interruption): the current segment ends now."""
        self._retired = max([self._retired, *self._segments,
                             *([self._current.sid] if self._current else [])])
        self._segments.clear()
        self._order.clear()
        self._current = None
        self._stalled = False

    # -- output ----------------------------------------------------------------------------
    def pull(self, now_ms: float) -> Pulled:
        self._est.tick(now_ms)
        seg = self._current
        if seg is None or seg.done():
            if seg is not None:
                self._retired = max(self._retired, seg.sid)
            seg = self._current = self._next_segment(now_ms)
            if seg is None:
                return Pulled(Pull.IDLE)
        if seg.out:
            return self._play_out(seg, now_ms)
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

        pms = self.cfg.packet_ms
        if self._stalled:
            need = max(self.cfg.min_ms, self.cfg.refill * self.target_ms) / pms
            remaining = None if seg.n_packets is None else seg.n_packets - seg.next_seq
            have = seg.buffered()  # a hole in it is concealed once playing resumes
            if have < math.ceil(need - 1e-9) and (remaining is None or have < remaining):
                seg.slip_ms += pms
                return Pulled(Pull.UNDERRUN, seg.sid)
            self._stalled = False

        if seg.tentative is not None and seg.buffered() > 0:
            seg.tentative = None  # something came after the slot on trial: it was a loss
        if self._steer(seg, now_ms):
            return self._play_out(seg, now_ms)
        seq = seg.next_seq
        if seq in seg.packets:
            arrived, payload = seg.packets.pop(seq)
            seg.next_seq += 1
            self.stats.played += 1
            return Pulled(Pull.PLAY, seg.sid, seq, payload, now_ms - (seg.t0 + seq * pms),
                          now_ms - arrived)
        if seg.buffered() > 0:
            seg.next_seq += 1
            seg.concealed.add(seq)
            self.stats.concealed += 1
            return Pulled(Pull.CONCEAL, seg.sid, seq)
        if seg.tentative is not None and (seq - seg.tentative) * pms >= self.cfg.trial_max_ms:
            self._rewind(seg, seg.tentative)  # too long for a loss: a stall
            seq = seg.next_seq
        elif seq > 0 and (seg.tentative is not None or self._may_try(seg)):
            # Nothing here at all: lost packets look like this until a later one comes, a stall
            # until the missing one does. Conceal on trial and keep time; if the missing packet
            # turns up first it was a stall after all, and push() rewinds to it.
            if seg.tentative is None:
                seg.tentative = seq
            seg.next_seq += 1
            seg.concealed.add(seq)
            self.stats.concealed += 1
            return Pulled(Pull.CONCEAL, seg.sid, seq, trial=True)
        else:
            self.stats.underruns += 1
        self._stalled = True
        seg.slip_ms += pms
        return Pulled(Pull.UNDERRUN, seg.sid, seq)

    def _rewind(self, seg: _Segment, seq: int) -> None:
        """The slots from ``seq`` on were concealed on trial but the stream had stalled: they
        become the stall's silence (one underrun) and ``seq`` plays next."""
        for q in range(seq, seg.next_seq):
            seg.concealed.discard(q)
        self.stats.concealed -= seg.next_seq - seq
        seg.slip_ms += (seg.next_seq - seq) * self.cfg.packet_ms
        seg.tentative, seg.next_seq = None, seq
        self.stats.underruns += 1

    def _may_try(self, seg: _Segment) -> bool:
        """Conceal on trial only where a loss is likely: the next packet of a real-time stream
        is overdue (a burst's gap is a pause of the sender, not a loss)."""
        return self.cfg.trial_conceal and seg.arrival_rate(self.cfg.packet_ms) < self.cfg.burst_ratio

    def _play_out(self, seg: _Segment, now_ms: float) -> Pulled:
        payload, pos, arrived, stretch = seg.out.popleft()
        self.stats.played += 1
        return Pulled(Pull.PLAY, seg.sid, int(pos), payload,
                      now_ms - (seg.t0 + pos * self.cfg.packet_ms), now_ms - arrived,
                      stretch_ms=stretch)

    def _silent(self, payload: Any) -> bool:
        return self._can_drop is None or self._can_drop(payload)

    def _steer(self, seg: _Segment, now_ms: float) -> bool:
        """Accelerate or expand a block of packets into ``seg.out`` when the playout delay is
        off the target; True if it did."""
        cfg, pms = self.cfg, self.cfg.packet_ms
        target, hyst, k = self.target_ms, self.cfg.hysteresis_ms, self.cfg.stretch_in
        seq = seg.next_seq
        if seq not in seg.packets:
            return False
        seg.since_drop += 1
        if seg.since_drop < k:
            return False
        # Playout delay behind the fastest recent packet's timeline: the quantity the target
        # is about. A burst is far above it (early audio), so it is never slowed down.
        behind = now_ms - (seg.anchor_ms + seq * pms)
        level = seg.in_row() * pms  # all the audio in hand, not only the block to stretch
        # Catching up. Time lost to stalls and expansions is taken back (the added delay from
        # packet 0's arrival says how much); a long real-time stream also follows a target
        # that came down or a sender clock that runs fast. Audio that merely came early (a
        # TTS sentence, a burst) is never compressed.
        # Either way the playout must stay above the target after losing a packet's time, or
        # the next pulls would expand again.
        added = now_ms - (seg.t0 + seq * pms)
        above = behind - pms > target + hyst / 2
        recover = seg.slip_ms > 0 and added > target + hyst
        follow = (seq * pms > cfg.catchup_after_ms and seg.arrival_rate(pms) < 1.1)
        if (recover or follow) and above and level > target:
            n = seg.in_row(k)  # fewer packets in hand: a shorter block, stretched harder
            if n >= 2 and self._accelerate(seg, n):
                return True
        # Slowing down: less than the target in hand and behind it (a ramp, a late packet
        # that raised the target, a slow sender clock): stretch a few packets.
        open_stream = seg.n_packets is None or seg.n_packets - seq > k
        if (self._stretch is not None and open_stream and behind < target - hyst / 2
                and seg.in_row() * pms < target):
            return self._expand(seg, seg.in_row(k - 1))
        return False

    def _take(self, seg: _Segment, n: int) -> tuple[list[Any], float]:
        """The next ``n`` packets' payloads, and when the last of them arrived."""
        got = [seg.packets.pop(seg.next_seq + i) for i in range(n)]
        seg.next_seq += n
        return [p for _, p in got], max(a for a, _ in got)

    def _after(self, seg: _Segment) -> Any:
        nxt = seg.packets.get(seg.next_seq)
        return None if nxt is None else nxt[1]

    def _accelerate(self, seg: _Segment, k: int) -> bool:
        start = seg.next_seq
        silent = [i for i in range(k) if self._silent(seg.packets[start + i][1])]
        if silent:  # a pause gets shorter: drop one silent packet, stretch nothing
            block, arrived = self._take(seg, k)
            drop = silent[0]
            if self._can_drop is None:  # content unknown: counted as speech
                self.stats.speech_dropped += 1
            else:
                self.stats.silence_dropped += 1
            pms = self.cfg.packet_ms
            kept = [(p, start + i, arrived, 0.0) for i, p in enumerate(block) if i != drop]
            kept[0] = (*kept[0][:3], -pms)  # the dropped pause's time
        elif self._stretch is not None and k >= 3:  # 3 as 2 at most: 1.5x, still speech
            block, arrived = self._take(seg, k)
            outs = self._stretch(block, k - 1, self._after(seg))
            save = -self.cfg.packet_ms / (k - 1)
            kept = [(p, start + i * k / (k - 1), arrived, save) for i, p in enumerate(outs)]
            self.stats.accelerated += 1
        else:
            return False  # speech and nothing to stretch it with: never drop words
        seg.out.extend(kept)
        seg.since_drop = 0
        seg.slip_ms = max(0.0, seg.slip_ms - self.cfg.packet_ms)
        return True

    def _expand(self, seg: _Segment, n: int) -> bool:
        start = seg.next_seq
        block, arrived = self._take(seg, n)
        silent = [i for i, p in enumerate(block) if self._can_drop is not None
                  and self._can_drop(p)]
        pms = self.cfg.packet_ms
        if silent:  # a pause gets longer: repeat one silent packet
            i = silent[0]
            outs = block[:i + 1] + [block[i]] + block[i + 1:]
            adds = [0.0] * (n + 1)
            adds[i + 1] = pms
        else:
            outs = self._stretch(block, n + 1, self._after(seg))
            adds = [pms / (n + 1)] * (n + 1)
        seg.out.extend((p, start + i * n / (n + 1), arrived, adds[i])
                       for i, p in enumerate(outs))
        self.stats.expanded += 1
        seg.since_drop = 0
        seg.slip_ms += self.cfg.packet_ms
        return True

    def _ready(self, seg: _Segment, now_ms: float) -> bool:
        """May the segment start before its target delay is out? Yes when it already holds
        ``target`` of audio in a row (or all of itself), or when it is arriving at least
        ``burst_ratio`` times faster than real time and holds ``min_ms``: audio pushed faster
        than real time (a TTS burst) builds the cushion the wait would buy, and faster."""
        pms = self.cfg.packet_ms
        need = max(1, math.ceil(self.target_ms / pms - 1e-9))
        have = seg.in_row(need)
        if have >= need or (seg.n_packets is not None and seg.next_seq + have >= seg.n_packets):
            return True
        have_ms = have * pms
        came_ms = max(seg.received_ms, (seg.next_seq + have) * pms)
        return (self.cfg.burst_ratio > 0 and have_ms >= max(self.cfg.min_ms, 2 * pms)
                and came_ms >= self.cfg.burst_ratio * (now_ms - seg.first_arrival_ms))

    def _next_segment(self, now_ms: float) -> _Segment | None:
        while self._order:
            seg = self._segments.pop(self._order.popleft())
            if seg.done():
                self._retired = max(self._retired, seg.sid)
                continue
            seg.start_at_ms = max(now_ms, seg.first_arrival_ms + (
                self.target_ms if self.cfg.adaptive else self.cfg.initial_ms))
            self._stalled = False
            return seg
        return None
