"""The canonical viseme set: the 15 Oculus/OpenXR visemes, in this order everywhere
(model outputs, viseme tracks, mouth sprites)."""

VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)
NUM_VISEMES = len(VISEMES)
VISEME_INDEX: dict[str, int] = {v: i for i, v in enumerate(VISEMES)}
SILENCE = VISEME_INDEX["sil"]
