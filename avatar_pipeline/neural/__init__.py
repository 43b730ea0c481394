"""The neural renderer slot (Wav2Lip-class ONNX generators) and a same-signature test model."""

from avatar_pipeline.neural.wav2lip import (
    ModelSignatureError,
    NeuralRenderer,
    check_signature,
    load_model,
    mel_windows,
)

__all__ = ["ModelSignatureError", "NeuralRenderer", "check_signature", "load_model",
           "mel_windows"]
