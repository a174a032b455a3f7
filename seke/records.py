"""Conversions between lake rows and the annotator contract types (FaceItem, Labels)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import polars as pl

from seke.annotation import FaceItem, Labels
from seke.taxonomy import AU_CATALOGUE, GRANULARITIES


def known_labels(row: Mapping[str, Any]) -> Labels:
    """Human labels of a ``raw_faces`` row (``known_aus`` null = AUs not coded)."""
    aus = row.get("known_aus")
    v, a = row.get("known_valence"), row.get("known_arousal")
    return Labels(
        expression=row.get("known_expression"),
        valence=v if (v is not None and a is not None) else None,
        arousal=a if (v is not None and a is not None) else None,
        aus=None if aus is None else {au: (1.0 if au in set(aus) else 0.0) for au in AU_CATALOGUE},
    )


def withheld(row: Mapping[str, Any], known: Labels | None = None) -> tuple[str, ...]:
    """Granularities of a ``raw_faces`` row to leave empty: the human label was invalid or
    conflicting at ingest (``invalid_labels``) and no valid one (e.g. from review) replaced it.
    Such a granularity is neither known nor missing, so it is never generated."""
    invalid = row.get("invalid_labels") or ()
    have = set((known if known is not None else known_labels(row)).known_granularities())
    return tuple(g for g in GRANULARITIES if g in invalid and g not in have)


def hide(labels: Labels, granularities: Iterable[str]) -> Labels:
    """A copy of ``labels`` with the given granularities removed (audit mode)."""
    g = set(granularities)
    return Labels(
        expression=None if "expression" in g else labels.expression,
        valence=None if "va" in g else labels.valence,
        arousal=None if "va" in g else labels.arousal,
        aus=None if "aus" in g else labels.aus,
    )


def face_items(raw_faces: pl.DataFrame, source: str = "",
               hidden: Mapping[str, Iterable[str]] | None = None) -> list[FaceItem]:
    """FaceItems for every raw face, with audit-hidden granularities removed from ``known`` and
    withheld (invalid human) granularities marked."""
    hidden = hidden or {}
    out = []
    for row in raw_faces.iter_rows(named=True):
        full = known_labels(row)
        known = hide(full, hidden.get(row["face_id"], ()))
        out.append(FaceItem(row["face_id"], row["crop_png"], known, source, row.get("subject_id"),
                            withheld(row, full)))
    return out
