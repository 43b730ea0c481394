"""Word error rate (character error rate for Mandarin) between a sentence and what a listener
heard, after the normalisation Whisper evaluations use in spirit: case and punctuation out,
numerals written as the words our sentences use, Arabic/Persian letter variants and Chinese
traditional characters as simplified ones (OpenCC's t2s table; Whisper base often writes
Mandarin in traditional characters)."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import numpy as np

_NUMBERS: dict[str, dict[str, str]] = {
    "en": {"1": "one", "3": "three", "7": "seven", "10": "ten", "12": "twelve"},
    "es": {"1": "uno", "3": "tres", "7": "siete", "10": "diez", "12": "doce"},
    "zh": {"1": "一", "3": "三", "7": "七", "10": "十", "12": "十二"},
    "fa": {"1": "یک", "3": "سه", "7": "هفت", "10": "ده", "12": "دوازده"},
}
_FA = str.maketrans({"ي": "ی", "ك": "ک", "\u200c": " ", "ۀ": "ه", "ة": "ه", "أ": "ا", "إ": "ا"})


@cache
def _opencc():
    from opencc import OpenCC  # opencc-python-reimplemented (dev extra)

    return OpenCC("t2s")


def _to_simplified(text: str) -> str:
    return _opencc().convert(text)


def _digits(text: str) -> str:
    # Persian/Arabic-Indic digits as ASCII
    return "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in text)


def tokens(text: str, language: str) -> list[str]:
    """Words (characters for Mandarin) of ``text``, normalised."""
    lang = "zh" if language in ("zh", "cmn") else language.split("-")[0]
    text = _digits(unicodedata.normalize("NFKC", text)).lower()
    if lang == "fa":
        text = text.translate(_FA)
    if lang == "zh":
        text = _to_simplified(text)
    for num, word in sorted(_NUMBERS.get(lang, {}).items(), key=lambda kv: -len(kv[0])):
        text = re.sub(rf"(?<![0-9]){num}(?![0-9])", f" {word} ", text)
    text = "".join(c if (c.isalnum() or c.isspace() or c == "'") else " " for c in text)
    if lang == "zh":
        return [c for c in text if not c.isspace()]
    return text.split()


def error_rate(ref: str, hyp: str, language: str) -> tuple[int, int]:
    """(edit distance, reference length) in tokens (words; characters for Mandarin)."""
    r, h = tokens(ref, language), tokens(hyp, language)
    d = np.arange(len(h) + 1, dtype=np.int64)
    for i in range(1, len(r) + 1):
        prev, d[0] = d.copy(), i
        for j in range(1, len(h) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return int(d[len(h)]), len(r)
