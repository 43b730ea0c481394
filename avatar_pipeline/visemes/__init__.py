"""Audio and text -> the 15 canonical viseme weights per video frame.

Heavy parts (onnxruntime) load lazily, so the text path (``avatar_pipeline.tts``) and the maps
import without them.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "audio_to_visemes": "avatar_pipeline.visemes.infer",
    "StreamingVisemes": "avatar_pipeline.visemes.infer",
    "VisemeBatcher": "avatar_pipeline.visemes.infer",
    "VisemeModel": "avatar_pipeline.visemes.infer",
    "default_model": "avatar_pipeline.visemes.infer",
    "Smoother": "avatar_pipeline.visemes.smoothing",
    "SmoothingParams": "avatar_pipeline.visemes.smoothing",
    "smooth_track": "avatar_pipeline.visemes.smoothing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = list(_LAZY)
