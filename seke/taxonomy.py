"""The label vocabulary shared by every stage: expressions, action units, granularities.

Expression names are the canonical AffectNet-8 names (the manifests in ../shared/data use them).
The AU catalogue is the union of the 17 AUs of the SEKE paper and the 23 AUs coded in CK+
(Lucey et al. 2010), so human AU labels from CK+ are never dropped.
"""

from __future__ import annotations

from typing import Final, Literal

EXPRESSIONS: Final[tuple[str, ...]] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
)

#: The 17 AUs the SEKE paper annotates.
PAPER_AUS: Final[tuple[int, ...]] = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)

#: FACS action unit names (Ekman, Friesen & Hager 2002, FACS manual).
AU_NAMES: Final[dict[int, str]] = {
    1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser",
    6: "cheek raiser", 7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser",
    11: "nasolabial deepener", 12: "lip corner puller", 14: "dimpler",
    15: "lip corner depressor", 16: "lower lip depressor", 17: "chin raiser",
    18: "lip pucker", 20: "lip stretcher", 21: "neck tightener", 22: "lip funneler",
    23: "lip tightener", 24: "lip pressor", 25: "lips part", 26: "jaw drop", 27: "mouth stretch",
}

#: Every AU id the platform accepts, sorted.
AU_CATALOGUE: Final[tuple[int, ...]] = tuple(sorted(AU_NAMES))

Granularity = Literal["expression", "va", "aus"]
GRANULARITIES: Final[tuple[str, ...]] = ("expression", "va", "aus")

#: Aliases seen in source datasets and model answers, mapped to canonical names.
EXPRESSION_ALIASES: Final[dict[str, str]] = {
    "happy": "happiness", "joy": "happiness", "sad": "sadness", "surprised": "surprise",
    "afraid": "fear", "fearful": "fear", "scared": "fear", "disgusted": "disgust",
    "angry": "anger", "contemptuous": "contempt", "calm": "neutral",
}


def normalise_expression(name: str | None) -> str | None:
    """Map a free-text expression name to the canonical taxonomy, or None if unknown/empty."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if not key:
        return None
    key = EXPRESSION_ALIASES.get(key, key)
    return key if key in EXPRESSIONS else None


def au_column(au: int) -> str:
    """Column name used for an AU in manifests and wide tables (``au1`` … ``au27``)."""
    return f"au{au}"
