"""The phoneme -> viseme maps are total over what espeak-ng emits for our lists (no defaults)."""

from __future__ import annotations

import pytest

from avatar_pipeline.tts import default_engine
from avatar_pipeline.tts.espeak import PAUSE_PHONEMES
from avatar_pipeline.viseme_set import VISEMES
from avatar_pipeline.visemes import maps
from avatar_pipeline.visemes.corpus import languages, sentences, word_lists


@pytest.fixture(scope="module")
def engine():
    return default_engine()


def _lines(lang):
    return [x.text for x in (*sentences(), *word_lists()) if x.language == lang]


def test_training_languages_include_the_four():
    assert {"en", "es", "zh", "fa"} <= set(languages())


@pytest.mark.parametrize("lang", ["en", "en-gb", "es", "zh", "fa", "fr", "de", "it", "pt"])
def test_espeak_map_total_over_every_phoneme_emitted(engine, lang):
    src = "en" if lang == "en-gb" else lang
    missing = set()
    seen = set()
    for text in _lines(src):
        for ph in engine.phonemize(text, lang)[0:]:
            for p in ph:
                if maps.is_marker(p):
                    continue
                seen.add(p)
                if maps.normalize_espeak(p) not in maps.ESPEAK_BASE:
                    missing.add(p)
        # and the phoneme events of real synthesis (they include pauses and glides)
    for text in _lines(src)[:6]:
        for p in engine.synthesize(text, lang).phonemes:
            if p.phoneme in PAUSE_PHONEMES:
                continue
            try:
                maps.espeak_to_viseme(p.phoneme)
            except KeyError:
                missing.add(p.phoneme)
    assert len(seen) > 15
    assert not missing, f"unmapped espeak phonemes for {lang}: {sorted(missing)}"


@pytest.mark.parametrize("lang", ["en", "es", "zh", "fa", "fr", "de", "it", "pt"])
def test_ipa_map_total_over_espeak_ipa(engine, lang):
    missing = set()
    for text in _lines(lang):
        for clause in engine.phonemize(text, lang, ipa=True):
            for p in clause:
                if maps.is_marker(p):
                    continue
                try:
                    maps.ipa_to_viseme(p)
                except KeyError:
                    missing.add(p)
    assert not missing, f"unmapped IPA for {lang}: {sorted(missing)}"


def test_arpabet_covers_cmudict_set():
    cmu = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
           "UH UW V W Y Z ZH").split()
    for ph in cmu:
        assert maps.arpabet_to_viseme(ph) in VISEMES
        assert maps.arpabet_to_viseme(ph + "1") == maps.arpabet_to_viseme(ph)
    assert maps.arpabet_to_viseme("B") == "PP"
    assert maps.arpabet_to_viseme("TH") == "TH"
    with pytest.raises(KeyError):
        maps.arpabet_to_viseme("XX")


def test_known_phonemes_land_where_expected():
    assert maps.espeak_to_viseme("'oU") == "oh"
    assert maps.espeak_to_viseme("p") == "PP"
    assert maps.espeak_to_viseme("tS") == "CH"
    assert maps.ipa_to_viseme("ˈæ") == "aa"
    assert maps.ipa_to_viseme("tʃ") == "CH"
    with pytest.raises(KeyError):
        maps.espeak_to_viseme("not-a-phoneme")
    with pytest.raises(KeyError):
        maps.ipa_to_viseme("☃")


def test_rhubarb_down_map_covers_all_fifteen():
    assert set(maps.RHUBARB) == set(VISEMES)
    assert set(maps.RHUBARB.values()) <= set(maps.RHUBARB_SHAPES)
    assert maps.to_rhubarb("sil") == "X"
    assert maps.to_rhubarb("PP") == "A"
    assert maps.to_rhubarb("aa") == "D"
    assert maps.to_rhubarb("ou") == "F"
    assert maps.to_rhubarb("FF") == "G"
