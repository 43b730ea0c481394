"""The neural renderer slot (Wav2Lip-class ONNX generators), Wav2Lip's own audio features and a
same-signature test model."""

from avatar_pipeline.neural.audio import mel_windows, melspectrogram
from avatar_pipeline.neural.wav2lip import (
    ModelSignatureError,
    NeuralRenderer,
    check_signature,
    load_model,
)

__all__ = ["ModelSignatureError", "NeuralRenderer", "check_signature", "load_model",
           "mel_windows", "melspectrogram"]
