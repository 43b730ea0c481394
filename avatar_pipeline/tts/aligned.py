"""Exact phoneme timing from a neural TTS graph's own durations.

Kokoro and Piper expand each input token over a whole number of output frames; the graph's
duration tensor (``onnx_prep``) says how many. So each token owns an exact span of the audio.
What each span *shows on the lips* depends on the token's role:

- ``phone``: a speech sound; its own viseme.
- ``prev``: a modifier that lengthens or colours the phone before it (``ː``, ``ʰ``, a
  nasalisation mark): its span belongs to that phone.
- ``next``: a stress mark written before a syllable (``ˈ``, ``ˌ``): its span belongs to the
  phone after it (the rendered stress sits in the vowel's onset).
- ``gap``: a word boundary or a VITS blank between tokens: a short gap is the transition between
  its neighbours and is split half and half between them; a gap of ``pause_s`` or more is a
  pause (``sil``).
- ``pause``: punctuation and the sequence's start/end padding: silence.

These rules are fixed from what the tokens are, not fitted to any score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_pipeline.tts.types import TimedPhoneme

ROLES = ("phone", "prev", "next", "gap", "pause")


@dataclass(frozen=True)
class Token:
    symbol: str
    role: str
    viseme: str = "sil"  # for phones

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")


def timed_phonemes(tokens: list[Token], frames: np.ndarray, samples_per_frame: int,
                   sample_rate: int, pause_s: float = 0.1) -> list[TimedPhoneme]:
    """Tokens and their durations (output frames each) -> ordered, non-overlapping intervals
    covering the whole audio (``sum(frames) * samples_per_frame`` samples)."""
    frames = np.asarray(frames).reshape(-1)
    if len(frames) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(frames)} durations")
    if (frames < 0).any():
        raise ValueError("negative duration")
    bounds = np.concatenate([[0], np.cumsum(np.round(frames).astype(np.int64))])
    bounds = bounds * samples_per_frame
    owner = _owners(tokens)

    # pieces: (start, end, owner) where owner is a phone token index or -1 (silence)
    pieces: list[tuple[int, int, int]] = []
    min_pause = pause_s * sample_rate
    i = 0
    while i < len(tokens):
        if tokens[i].role != "gap":
            if bounds[i + 1] > bounds[i]:
                pieces.append((int(bounds[i]), int(bounds[i + 1]), owner[i]))
            i += 1
            continue
        j = i  # a run of gaps (blank, space, blank) is one boundary between its neighbours
        while j < len(tokens) and tokens[j].role == "gap":
            j += 1
        a, b = int(bounds[i]), int(bounds[j])
        p = owner[i - 1] if i > 0 else -1
        n = owner[j] if j < len(tokens) else -1
        if b - a >= min_pause:
            pieces.append((a, b, -1))
        elif b > a:
            p, n = (p if p >= 0 else n), (n if n >= 0 else p)
            mid = (a + b) // 2
            pieces.append((a, mid, p))
            pieces.append((mid, b, n))
        i = j
    out: list[TimedPhoneme] = []
    for a, b, o in pieces:
        if b <= a:
            continue
        if out and _same(out[-1], o, tokens) and abs(out[-1].end_s * sample_rate - a) < 0.5:
            last = out[-1]
            out[-1] = TimedPhoneme(last.phoneme, last.start_s, b / sample_rate, last.viseme)
            continue
        sym, vis = ("_", "sil") if o < 0 else (tokens[o].symbol, tokens[o].viseme)
        out.append(TimedPhoneme(f"{sym}#{o}" if o >= 0 else sym, a / sample_rate,
                                b / sample_rate, vis))
    # the owner index only served to keep two equal phones apart; drop it
    return [TimedPhoneme(p.phoneme.split("#")[0], p.start_s, p.end_s, p.viseme) for p in out]


def _owners(tokens: list[Token]) -> list[int]:
    """The phone each non-gap token's span belongs to (-1: silence). Modifiers go to the phone
    before them, stress marks to the phone after; never across a pause, and to the other side
    when their own side has no phone."""
    n = len(tokens)
    before, after = [-1] * n, [-1] * n
    last = -1
    for i, t in enumerate(tokens):
        before[i] = last
        last = i if t.role == "phone" else (-1 if t.role == "pause" else last)
    last = -1
    for i in range(n - 1, -1, -1):
        after[i] = last
        t = tokens[i]
        last = i if t.role == "phone" else (-1 if t.role == "pause" else last)
    owner = [-1] * n
    for i, t in enumerate(tokens):
        if t.role == "phone":
            owner[i] = i
        elif t.role == "prev":
            owner[i] = before[i] if before[i] >= 0 else after[i]
        elif t.role == "next":
            owner[i] = after[i] if after[i] >= 0 else before[i]
    return owner


def _pause_between(tokens: list[Token], a: int, b: int) -> bool:
    return any(tokens[j].role == "pause" for j in range(min(a, b) + 1, max(a, b)))


def _same(last: TimedPhoneme, owner: int, tokens: list[Token]) -> bool:
    if owner < 0:
        return last.viseme == "sil" and last.phoneme == "_"
    return last.phoneme == f"{tokens[owner].symbol}#{owner}"


def refine_pauses(phonemes: list[TimedPhoneme], pcm: np.ndarray, sample_rate: int,
                  floor_db: float = 50.0, max_onset_s: float = 0.1) -> list[TimedPhoneme]:
    """Move the edges between speech and pauses to where the sound starts and stops.

    Neural duration predictors give a pause's time partly to the phone next to it: Kokoro's
    last phone before a full stop ran on ~0.5 s into digital silence (measured on its
    training speech), and speech started ~30 ms before the first phone's span. A mouth does
    not keep articulating into silence, so at every edge between a phone and a pause
    (``sil``) the edge moves to the sound: a phone's silent tail (below ``floor_db`` under
    the utterance's loudest 10 ms) becomes ``sil`` (one 10 ms hangover kept), a phone with no
    sound at all becomes ``sil``, and sound within ``max_onset_s`` before a phone that
    follows a pause joins that phone. Phone-to-phone edges are left alone. The rule is fixed
    from the signal, the same for every voice."""
    if not phonemes:
        return []
    x = np.asarray(pcm, np.float64).reshape(-1)
    if x.dtype.kind in "iu" or np.abs(x).max() > 1.5:
        x = x / 32768.0
    hop = max(1, sample_rate // 100)
    n = int(np.ceil(len(x) / hop))
    pad = np.zeros(n * hop)
    pad[:len(x)] = x
    db = 10 * np.log10(np.mean(pad.reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = db > db.max() - floor_db

    def frames(a: float, b: float) -> tuple[int, int]:
        return int(round(a * 100)), int(round(b * 100))

    phs = [TimedPhoneme(p.phoneme, p.start_s, p.end_s, p.viseme) for p in phonemes]
    for i, p in enumerate(phs):
        if p.viseme == "sil":
            continue
        a, b = frames(p.start_s, p.end_s)
        after_pause = i + 1 >= len(phs) or phs[i + 1].viseme == "sil"
        before_pause = i == 0 or phs[i - 1].viseme == "sil"
        if (after_pause or before_pause) and not loud[a:b].any():
            phs[i] = TimedPhoneme(p.phoneme, p.start_s, p.end_s, "sil")
            continue
        if after_pause:
            last = a + int(np.nonzero(loud[a:b])[0][-1]) + 1
            end = min(b, last + 1) / 100  # one frame of hangover
            if end < p.end_s:
                phs[i] = p = TimedPhoneme(p.phoneme, p.start_s, end, p.viseme)
                if i + 1 < len(phs):
                    nxt = phs[i + 1]
                    phs[i + 1] = TimedPhoneme(nxt.phoneme, end, nxt.end_s, nxt.viseme)
                else:
                    phs.append(TimedPhoneme("_", end, phonemes[-1].end_s, "sil"))
        if before_pause and i > 0:
            prev = phs[i - 1]
            lo = max(frames(prev.start_s, 0)[0], a - int(max_onset_s * 100))
            k = a
            while k - 1 >= lo and loud[k - 1]:
                k -= 1
            if k < a:
                start = k / 100
                phs[i - 1] = TimedPhoneme(prev.phoneme, prev.start_s, start, prev.viseme)
                phs[i] = TimedPhoneme(p.phoneme, start, phs[i].end_s, p.viseme)
    out = [p for p in phs if p.end_s > p.start_s]
    merged: list[TimedPhoneme] = []
    for p in out:  # neighbouring silences become one
        if merged and p.viseme == "sil" and merged[-1].viseme == "sil":
            merged[-1] = TimedPhoneme(merged[-1].phoneme, merged[-1].start_s, p.end_s, "sil")
        else:
            merged.append(p)
    return merged
