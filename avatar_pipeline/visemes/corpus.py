"""The project's multilingual sentence and word lists (``data/*.txt``) and their splits."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
# every 8th sentence of each language is held out of training
HELDOUT_EVERY = 8


@dataclass(frozen=True)
class Line:
    language: str
    text: str
    index: int  # index among this language's lines in its file

    @property
    def heldout(self) -> bool:
        return self.index % HELDOUT_EVERY == HELDOUT_EVERY - 1


def _read(name: str) -> list[Line]:
    out: list[Line] = []
    counts: dict[str, int] = {}
    for raw in (DATA_DIR / name).read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        lang, text = raw.split("\t", 1)
        i = counts.get(lang, 0)
        counts[lang] = i + 1
        out.append(Line(lang, text.strip(), i))
    return out


@cache
def sentences() -> tuple[Line, ...]:
    return tuple(_read("sentences.txt"))


@cache
def word_lists() -> tuple[Line, ...]:
    return tuple(_read("words.txt"))


def languages() -> list[str]:
    return sorted({s.language for s in sentences()})


def _plain(name: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in (DATA_DIR / name).read_text(encoding="utf-8")
                 .splitlines() if line.strip() and not line.startswith("#"))


@cache
def english_text() -> tuple[str, ...]:
    """English training sentences (``data/en_text.txt``: CPython docstrings, PSF License)."""
    return _plain("en_text.txt")


@cache
def eval_sentences() -> tuple[str, ...]:
    """English sentences reserved for evaluation (``data/eval_sentences.txt``): never in a
    training corpus."""
    return _plain("eval_sentences.txt")
