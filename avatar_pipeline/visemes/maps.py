"""Fixed maps from phoneme inventories to the 15 canonical visemes, and 15 -> Rhubarb A-H/X.

Maps are explicit tables: a phoneme that is not in a table raises ``KeyError`` (tests check that
the tables are total over every phoneme espeak-ng emits for our sentence and word lists), so a
new phoneme is never silently mapped to a default.

Groups follow the Oculus/OpenXR viseme reference: PP = p b m, FF = f v, TH = θ ð, DD = t d,
kk = k g (and the other back consonants), CH = tʃ dʒ ʃ ʒ (and retroflex / alveolo-palatal
sibilants), SS = s z (and ts dz), nn = n l, RR = r-like sounds, aa / E / ih / oh / ou the vowels.
Diphthongs map by their nucleus (Mandarin ``iA`` -> aa) or, for falling diphthongs, by their
first element (English ``aI`` -> aa).
"""

from __future__ import annotations

from avatar_pipeline.viseme_set import VISEMES

# --- espeak-ng mnemonics (Kirshenbaum-like, as in phsource/ph_*), language-independent base ----
ESPEAK_BASE: dict[str, str] = {
    # pauses
    "_": "sil", "_:": "sil", "_!_": "sil", "_!": "sil", "_|": "sil", "_^": "sil", "_;": "sil",
    "?": "sil",  # glottal stop: a short closure with a neutral mouth
    # bilabials
    "p": "PP", "b": "PP", "m": "PP", "ph": "PP", "B": "PP", "m-": "PP",
    # labiodentals
    "f": "FF", "v": "FF", "F": "FF",
    # dentals
    "T": "TH", "D": "TH",
    # alveolar stops
    "t": "DD", "d": "DD", "t#": "DD", "t2": "DD", "d#": "DD", "d2": "DD", "th": "DD", "t;": "DD",
    "d;": "DD",
    # velars / uvulars / glottal fricative
    "k": "kk", "g": "kk", "kh": "kk", "N": "kk", "x": "kk", "X": "kk", "Q": "kk", "q": "kk",
    "h": "kk", "G": "kk", "1": "kk",  # fa '1': the closure between geminate q's
    # postalveolar / retroflex / alveolo-palatal
    "tS": "CH", "dZ": "CH", "S": "CH", "Z": "CH", "C": "CH", "J^": "CH", "tS;": "CH",
    "tS;h": "CH", "S;": "CH", "s.": "CH", "z.": "CH", "ts.": "CH", "ts.h": "CH", "s#": "CH",
    "c": "CH", "J": "CH",
    # sibilants
    "s": "SS", "z": "SS", "ss": "SS", "z2": "SS", "ts": "SS", "tsh": "SS", "ts2": "SS", "dz": "SS",
    # nasals and laterals
    "n": "nn", "n-": "nn", "l": "nn", "l^": "nn", "n^": "nn", "@L": "nn", "L": "nn", "l/": "nn",
    "l#": "nn",
    # rhotics
    "r": "RR", "r-": "RR", "R": "RR", "R2": "RR", "**": "RR", "*": "RR", "3": "RR", "3:": "RR",
    "@r": "RR", "r/": "RR",
    # open vowels
    "a": "aa", "a:": "aa", "A": "aa", "A:": "aa", "a#": "aa", "aa": "aa", "A@": "aa", "V": "aa",
    "&": "aa", "&~": "aa", "&U~": "aa", "A~": "aa", "a-": "aa", "aI": "aa", "aI3": "aa",
    "aI@": "aa", "aU": "aa", "Au": "aa", "ai": "aa", "iA": "aa", "ua": "aa", "uai": "aa", "0": "aa",
    "a~": "aa",
    # mid front / central vowels
    "E": "E", "e": "E", "e:": "E", "E:": "E", "e@": "E", "eI": "E", "@": "E", "@2": "E", "@-": "E",
    "e-": "E", "E~": "E", "ei": "E", "iE": "E", "yE": "E", "uei": "E", "u@": "E", "o-": "E",
    "eU": "E", "e~": "E",
    # close front vowels and the palatal glide
    "i": "ih", "i:": "ih", "I": "ih", "I2": "ih", "I#": "ih", "i@": "ih", "i@3": "ih", "i.": "ih",
    "i[": "ih", "j": "ih", ";": "ih", "iU": "ih", "i~": "ih",
    # rounded mid / back vowels
    "o": "oh", "o:": "oh", "O": "oh", "O:": "oh", "O2": "oh", "O@": "oh", "o@": "oh", "oU": "oh",
    "OI": "oh", "oI": "oh", "O~": "oh", "ou": "oh", "uo": "oh", "ong": "oh", "iou": "oh",
    "OY": "oh", "o~": "oh",
    # close rounded vowels and w
    "u": "ou", "u:": "ou", "U": "ou", "U@": "ou", "w": "ou", "y": "ou", "y:": "ou", "Y": "ou",
    "y-": "ou", "W": "ou", "W~": "ou", "u~": "ou", "y&": "ou", "U~": "ou",
}

# Per-language overrides where a mnemonic means something else in that language.
ESPEAK_LANG: dict[str, dict[str, str]] = {}

_STRESS = "',%="


def normalize_espeak(phoneme: str) -> str:
    """The table key of an espeak phoneme event: stress marks (``'`` primary, ``,`` secondary,
    ``%`` / ``=`` unstressed) stripped, then, only if the name is not itself in the table,
    Mandarin tone numbers (``a214``) and a gemination/length ``:`` (Italian ``t:``)."""
    base = phoneme.lstrip(_STRESS)
    if base in ESPEAK_BASE:
        return base
    stripped = base.rstrip("0123456789")
    if stripped and stripped in ESPEAK_BASE:
        return stripped
    if base.endswith(":") and base[:-1] in ESPEAK_BASE:
        return base[:-1]
    return base


def is_marker(phoneme: str) -> bool:
    """Events that are not phonemes: language switches such as ``(en)``."""
    return phoneme.startswith("(") and phoneme.endswith(")")


def espeak_to_viseme(phoneme: str, language: str | None = None) -> str:
    base = normalize_espeak(phoneme)
    if language:
        override = ESPEAK_LANG.get(language, {})
        if base in override:
            return override[base]
    return ESPEAK_BASE[base]


# --- ARPAbet (CMUdict, 39 phonemes; stress digits stripped) ---------------------------------
ARPABET: dict[str, str] = {
    "AA": "aa", "AE": "aa", "AH": "aa", "AO": "oh", "AW": "aa", "AY": "aa", "EH": "E", "ER": "RR",
    "EY": "E", "IH": "ih", "IY": "ih", "OW": "oh", "OY": "oh", "UH": "ou", "UW": "ou",
    "B": "PP", "P": "PP", "M": "PP", "F": "FF", "V": "FF", "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD", "DX": "DD", "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH", "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn", "EN": "nn", "EL": "nn", "R": "RR", "W": "ou", "Y": "ih",
    "AX": "E", "AXR": "RR", "IX": "ih", "UX": "ou", "Q": "sil",
    "SIL": "sil", "SP": "sil", "SPN": "sil", "NSN": "sil", "+BREATH+": "sil", "+NOISE+": "sil",
}


def arpabet_to_viseme(phone: str) -> str:
    return ARPABET[phone.upper().rstrip("012")]


# --- IPA (segments; diacritics for length, stress, aspiration, nasalisation are ignored) -------
IPA: dict[str, str] = {
    "p": "PP", "b": "PP", "m": "PP", "ɱ": "FF", "β": "PP", "ɸ": "FF",
    "f": "FF", "v": "FF", "ʋ": "FF",
    "θ": "TH", "ð": "TH",
    "t": "DD", "d": "DD", "ɾ": "RR", "ʈ": "DD", "ɖ": "DD",
    "k": "kk", "g": "kk", "ɡ": "kk", "ŋ": "kk", "x": "kk", "ɣ": "kk", "q": "kk", "ɢ": "kk",
    "h": "kk", "ɦ": "kk", "χ": "kk", "ʁ": "RR", "ʔ": "sil", "c": "CH", "ɟ": "CH",
    "ʃ": "CH", "ʒ": "CH", "tʃ": "CH", "dʒ": "CH", "ʂ": "CH", "ʐ": "CH", "ɕ": "CH", "ʑ": "CH",
    "tɕ": "CH", "dʑ": "CH", "ʈʂ": "CH", "ç": "CH", "ʝ": "CH",
    "s": "SS", "z": "SS", "ts": "SS", "dz": "SS",
    "n": "nn", "l": "nn", "ɲ": "nn", "ʎ": "nn", "ɫ": "nn", "ɳ": "nn", "ɭ": "nn",
    "r": "RR", "ɹ": "RR", "ɻ": "RR", "ʀ": "RR", "ɚ": "RR", "ɝ": "RR",
    "a": "aa", "ɑ": "aa", "ɐ": "aa", "æ": "aa", "ʌ": "aa", "ɒ": "aa", "ä": "aa",
    "e": "E", "ɛ": "E", "ə": "E", "ɜ": "E", "ɤ": "E", "œ": "ou", "ø": "ou", "ɘ": "E",
    "i": "ih", "ɪ": "ih", "ɨ": "ih", "j": "ih", "ɯ": "ih", "ᵻ": "ih",
    "o": "oh", "ɔ": "oh", "ɵ": "oh",
    "u": "ou", "ʊ": "ou", "w": "ou", "y": "ou", "ʏ": "ou", "ʉ": "ou", "ɥ": "ou",
}
_IPA_IGNORE = set("ːˑˈˌ.ʰʲʷ̩̯̃͡‿ ˞-") | {"\u0303", "\u0329", "\u032f", "\u0361", "\u02de", "\u032a"}


def ipa_segments(ipa: str) -> list[str]:
    """Split an IPA string into segments from the table (longest match first)."""
    out: list[str] = []
    i = 0
    while i < len(ipa):
        ch = ipa[i]
        if ch in _IPA_IGNORE or ch.isdigit():
            i += 1
            continue
        two = ipa[i:i + 2].replace("\u0361", "")
        if len(two) == 2 and two in IPA:
            out.append(two)
            i += 2
            continue
        if ch not in IPA:
            raise KeyError(ch)
        out.append(ch)
        i += 1
    return out


def ipa_to_viseme(phone: str) -> str:
    """The viseme of one IPA phone (its first segment decides, as for diphthongs)."""
    segs = ipa_segments(phone)
    if not segs and phone.isdigit():
        return "kk"  # espeak's IPA for Persian writes its geminate-q closure as "1"
    if not segs:
        raise KeyError(phone)
    return IPA[segs[0]]


# Per-language readings of an IPA symbol where the table's default is another language's:
# the English flap (water, better) is a tongue tap behind closed-ish teeth, like t/d, while
# the Spanish/Italian tap r is an r.
IPA_LANG: dict[str, dict[str, str]] = {"en": {"ɾ": "DD"}}

# Symbols of Kokoro's vocabulary (misaki's phoneme set) that are not IPA segments: diphthongs
# and affricates written as one letter (mapped like their espeak mnemonics: aI -> aa,
# eI -> E, oU -> oh), the reduced vowels, and the US flap letter.
KOKORO: dict[str, str] = {
    "A": "E", "I": "aa", "O": "oh", "W": "aa", "Y": "oh", "Q": "oh",
    "ʧ": "CH", "ʤ": "CH", "ʦ": "SS", "ʣ": "SS", "ʨ": "CH", "ʥ": "CH",
    "ᵊ": "E", "T": "DD", "ɰ": "ou", "ɴ": "nn", "ɽ": "RR", "ꭧ": "RR", "ɕ": "CH", "S": "SS",
}


def ipa_symbol_viseme(symbol: str, language: str | None = None) -> str:
    """The viseme of one symbol of an IPA token sequence (Kokoro's or Piper's input): the
    language's override, else Kokoro's own letters, else the IPA table. ``KeyError`` if none."""
    base = (language or "").split("-")[0].lower()
    if symbol in IPA_LANG.get(base, {}):
        return IPA_LANG[base][symbol]
    if symbol in KOKORO:
        return KOKORO[symbol]
    return IPA[symbol]


# --- 15 -> Rhubarb Lip Sync mouths A-H and X -----------------------------------------------
# A closed (P B M), B slightly open with clenched teeth (most consonants, EE), C open (EH, AE),
# D wide open (AA), E slightly rounded (AO, ER), F puckered (UW, OW, W), G F/V, H L, X idle.
RHUBARB: dict[str, str] = {
    "sil": "X", "PP": "A", "FF": "G", "TH": "B", "DD": "B", "kk": "B", "CH": "B", "SS": "B",
    "nn": "H", "RR": "E", "aa": "D", "E": "C", "ih": "B", "oh": "E", "ou": "F",
}
RHUBARB_SHAPES = ("A", "B", "C", "D", "E", "F", "G", "H", "X")

assert set(RHUBARB) == set(VISEMES)
assert set(ESPEAK_BASE.values()) <= set(VISEMES)
assert set(ARPABET.values()) <= set(VISEMES)
assert set(IPA.values()) <= set(VISEMES)
assert set(KOKORO.values()) <= set(VISEMES)
assert all(set(m.values()) <= set(VISEMES) for m in IPA_LANG.values())


def to_rhubarb(viseme: str) -> str:
    return RHUBARB[viseme]
