"""A lesson's transcript as SubRip (SRT) and WebVTT: cue times from the first line's start,
one cue per line, the speaker named (``Tutor:`` in SRT, a ``<v Tutor>`` voice span in WebVTT).
Text is escaped for each format (WebVTT cue text is markup: ``&``, ``<`` and ``>`` escaped;
a line made only of ``-->`` would end a cue, so arrows are spaced apart)."""

from __future__ import annotations

from collections.abc import Sequence

from config.fleet import TranscriptEntry

SPEAKER = {"tutor": "Tutor", "learner": "Learner"}


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _span(e: TranscriptEntry, t0: float) -> tuple[float, float]:
    start = e.start - t0
    return start, max(e.end - t0, start + 0.5)  # a cue is on screen long enough to read


def _one_line(text: str) -> str:
    return " ".join(text.replace("-->", "- ->").split())


def to_srt(lines: Sequence[TranscriptEntry]) -> str:
    if not lines:
        return ""
    t0 = lines[0].start
    cues = []
    for i, e in enumerate(lines, 1):
        a, b = _span(e, t0)
        cues.append(f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n"
                    f"{SPEAKER[e.speaker]}: {_one_line(e.text)}\n")
    return "\n".join(cues)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(lines: Sequence[TranscriptEntry]) -> str:
    out = ["WEBVTT", ""]
    t0 = lines[0].start if lines else 0.0
    for i, e in enumerate(lines, 1):
        a, b = _span(e, t0)
        out += [str(i), f"{_clock(a, '.')} --> {_clock(b, '.')}",
                f"<v {SPEAKER[e.speaker]}>{_vtt_escape(_one_line(e.text))}", ""]
    return "\n".join(out)
