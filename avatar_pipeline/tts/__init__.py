"""Text to speech with exact phoneme timing (the text path for lesson scripts)."""

from __future__ import annotations

from avatar_pipeline.tts.types import (
    Speech,
    TimedPhoneme,
    TTSEngine,
    viseme_ids_from_phonemes,
    viseme_track_from_phonemes,
)

_DEFAULT = None


def default_engine() -> TTSEngine:
    """The shared espeak-ng engine (en, es, zh/cmn, fa and every other espeak-ng language)."""
    global _DEFAULT
    if _DEFAULT is None:
        from avatar_pipeline.tts.espeak import EspeakEngine

        _DEFAULT = EspeakEngine()
    return _DEFAULT


__all__ = ["Speech", "TimedPhoneme", "TTSEngine", "default_engine", "viseme_track_from_phonemes",
           "viseme_ids_from_phonemes"]
