"""Replaying network traces through the jitter buffer on a simulated clock, as the worker runs it.

A trace (``shared/traces/README.md``) lists when each 20 ms packet arrived (None = lost) and the
speech segment it belongs to. The worker does not pull 20 ms packets: its engine cuts the
incoming audio into packets of one frame period (40 ms at 25 fps) and a packet is whole when
its last sample is in. :func:`worker_packets` regroups a trace that way: a worker packet arrives
when the last of its trace packets does, and is lost if any of them is (its audio has a hole).

Every packet also carries its *class* (speech or a pause) from :func:`speech_classes`, so the
replay exercises what the worker does with content: catching up drops or repeats only pauses
and time-stretches speech. The replay counts speech that never played although it arrived in
time (``speech_dropped``, the goal is none) from what came out, not from the buffer's own
bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avatar_pipeline.jitter import JitterBuffer, JitterConfig, JitterStats, Pull


@dataclass(frozen=True)
class Tag:
    """A replayed packet's content: speech or pause, and the trace packets it carries."""

    speech: bool
    src: tuple[int, ...] = ()


def tag_stretch(block: list[Tag], n_out: int, _after: Tag | None) -> list[Tag]:
    """The replay's stand-in for WSOLA: the block's content spread over ``n_out`` packets."""
    speech = any(t.speech for t in block)
    src = tuple(s for t in block for s in t.src)
    return [Tag(speech, src if i == 0 else ()) for i in range(n_out)]


def speech_classes(segment: list[int], seed: int = 0, packet_ms: float = 20.0) -> list[bool]:
    """Speech/pause per trace packet: within each segment, phrases of 0.4-3 s of speech
    (lognormal, median 1.2 s) separated by pauses of 120-600 ms (conversational speech's
    usual rhythm); a segment starts with speech."""
    rng = np.random.default_rng(seed)
    out: list[bool] = []
    left, speaking, prev = 0.0, True, None
    for s in segment:
        if s != prev:
            speaking, left, prev = True, float(np.clip(rng.lognormal(np.log(1200), 0.5), 400, 3000)), s
        out.append(speaking)
        left -= packet_ms
        if left <= 0:
            speaking = not speaking
            left = (float(np.clip(rng.lognormal(np.log(1200), 0.5), 400, 3000)) if speaking
                    else float(rng.uniform(120, 600)))
    return out


@dataclass
class WorkerPackets:
    arrival_ms: list[float | None]
    segment: list[int]
    tags: list[Tag]


def worker_packets(arrival_ms: list[float | None], segment: list[int], classes: list[bool],
                   trace_packet_ms: float, packet_ms: float) -> WorkerPackets:
    """Regroup trace packets into the worker's packets of ``packet_ms``."""
    k = packet_ms / trace_packet_ms
    if abs(k - round(k)) > 1e-9 or k < 1:
        raise ValueError("the worker's packet must be a whole number of trace packets")
    k = int(round(k))
    out = WorkerPackets([], [], [])
    i, n = 0, len(arrival_ms)
    while i < n:
        j = i
        while j < n and j - i < k and segment[j] == segment[i]:
            j += 1
        parts = arrival_ms[i:j]
        out.arrival_ms.append(None if any(a is None for a in parts) else max(parts))
        out.segment.append(segment[i])
        out.tags.append(Tag(any(classes[i:j]), tuple(range(i, j))))
        i = j
    return out


@dataclass
class TraceResult:
    name: str
    config: str
    minutes: float
    delays_ms: np.ndarray  # added delay of every played packet (from packet 0's arrival)
    stats: JitterStats
    target_ms: np.ndarray  # target over time (one sample per second)
    speech_dropped: int = 0  # trace packets of speech that arrived in time and never played
    packet_ms: float = 20.0
    waits_ms: np.ndarray = field(default_factory=lambda: np.zeros(1))  # time in the buffer

    @property
    def underruns(self) -> int:
        return self.stats.underruns

    @property
    def underruns_per_10min(self) -> float:
        return self.underruns * 10.0 / self.minutes

    def summary(self) -> dict[str, float | int | str]:
        d = self.delays_ms
        s = self.stats
        return {
            "trace": self.name, "config": self.config, "packet_ms": self.packet_ms,
            "underruns": s.underruns, "underruns_per_10min": round(self.underruns_per_10min, 2),
            "late_concealed": s.late, "late_concealed_pct": round(s.late_pct, 3),
            "lost_concealed": s.concealed - s.late,
            "delay_median_ms": round(float(np.median(d)), 1),
            "delay_p95_ms": round(float(np.percentile(d, 95)), 1),
            "delay_p99_ms": round(float(np.percentile(d, 99)), 1),
            "wait_median_ms": round(float(np.median(self.waits_ms)), 1),
            "speech_dropped": self.speech_dropped,
            "silence_dropped": s.silence_dropped,
            "accelerated": s.accelerated, "expanded": s.expanded, "played": s.played,
        }


def replay(arrival_ms: list[float | None], segment: list[int], config: JitterConfig,
           tags: list | None = None, name: str = "trace", config_name: str = "",
           stretch: bool = True) -> TraceResult:
    """Replay packets of ``config.packet_ms`` on a simulated clock.

    Packet k arrives at ``arrival_ms[k]`` (None = lost); the playout clock pulls every
    ``packet_ms``; a segment is closed when its last packet (in index order) has arrived or, if
    lost, when everything else of it has. ``tags``: each packet's :class:`Tag` (None: all
    speech, one trace packet each)."""
    pms = config.packet_ms
    tags = tags if tags is not None else [Tag(True, (k,)) for k in range(len(arrival_ms))]
    buf = JitterBuffer(config, can_drop=lambda t: not t.speech,
                       stretch=tag_stretch if stretch else None)
    seqs: list[int] = []
    sizes: dict[int, int] = {}
    for s in segment:
        seqs.append(sizes.get(s, 0))
        sizes[s] = sizes.get(s, 0) + 1
    events = sorted((t, k) for k, t in enumerate(arrival_ms) if t is not None)
    arrived: dict[int, int] = {}
    lost = {s: 0 for s in sizes}
    for t, s in zip(arrival_ms, segment, strict=True):
        if t is None:
            lost[s] += 1
    delays: list[float] = []
    waits: list[float] = []
    targets: list[float] = []
    played_src: set[int] = set()
    in_time: set[int] = set()  # packets that were in the buffer before their slot passed
    ei, now = 0, 0.0
    end = events[-1][0] + 60_000.0
    while now <= end:
        while ei < len(events) and events[ei][0] <= now:
            t, k = events[ei]
            s = segment[k]
            late_before = buf.stats.late + buf.stats.duplicates
            buf.push(s, seqs[k], t, tags[k])
            if buf.stats.late + buf.stats.duplicates == late_before:
                in_time.add(k)
            arrived[s] = arrived.get(s, 0) + 1
            if arrived[s] + lost[s] == sizes[s]:
                buf.end_segment(s, sizes[s])  # stream closed: everything that will come is in
            ei += 1
        p = buf.pull(now)
        if p.kind is Pull.PLAY:
            delays.append(p.delay_ms)
            waits.append(p.wait_ms)
            played_src.update(p.payload.src)
        if int(now) % 1000 == 0:
            targets.append(buf.target_ms)
        if ei >= len(events) and p.kind is Pull.IDLE and buf._current is None:
            break
        now += pms
    src_of = {k: tags[k].src for k in in_time}
    dropped = sum(1 for k, src in src_of.items() if tags[k].speech
                  and not any(s in played_src for s in src))
    minutes = (events[-1][0] - events[0][0]) / 60_000.0
    return TraceResult(name, config_name, minutes, np.asarray(delays), buf.stats,
                       np.asarray(targets), speech_dropped=dropped, packet_ms=pms,
                       waits_ms=np.asarray(waits))


def replay_trace(trace: dict, config: JitterConfig, config_name: str = "",
                 stretch: bool = True, seed: int = 0) -> TraceResult:
    """A trace file's content (``arrival_ms``, ``segment``, ``packet_ms``) replayed as the
    worker runs it: packets of ``config.packet_ms`` with speech/pause classes."""
    tpms = float(trace.get("packet_ms", 20.0))
    classes = speech_classes(trace["segment"], seed, tpms)
    wp = worker_packets(trace["arrival_ms"], trace["segment"], classes, tpms, config.packet_ms)
    return replay(wp.arrival_ms, wp.segment, config, wp.tags, trace.get("name", "trace"),
                  config_name, stretch)
