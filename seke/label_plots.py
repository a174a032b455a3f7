"""Pictures of one ``verified_labels`` partition for the asset page: what a reviewer looks at
first. Small PNGs (about 400–500 px wide) with short titles.

* ``confusion``: generated vs hidden human expression on the audit faces (audit mode only:
  otherwise there is nothing independent to compare with, and no plot is made);
* ``va``: accepted labels on the valence–arousal plane, coloured by expression;
* ``aus``: share of accepted faces showing each action unit.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import polars as pl

from seke.annotation import Labels
from seke.evaluate import confusion_png, figure_png
from seke.metrics import confusion_matrix
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS


def audit_confusion_png(labels: pl.DataFrame, gold: Mapping[str, Labels]) -> bytes | None:
    """Confusion of generated vs hidden human expressions, or None without audit faces."""
    rows = [(gold[f].expression, e) for f, e in zip(labels["face_id"], labels["expression"])
            if f in gold and gold[f].expression is not None]
    if not rows:
        return None
    present = [c for c in EXPRESSIONS if any(c in r for r in rows)]
    m = confusion_matrix([g for g, _ in rows], [p for _, p in rows], present)
    return confusion_png(m.tolist(), present, f"audit: hidden human vs generated (n={len(rows)})")


def va_plane_png(labels: pl.DataFrame) -> bytes | None:
    acc = labels.filter((pl.col("status") == "accepted") & pl.col("valence").is_not_null()
                        & pl.col("arousal").is_not_null())
    if not acc.height:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2))
    for expr in EXPRESSIONS:
        sub = acc.filter(pl.col("expression") == expr)
        if sub.height:
            ax.scatter(sub["valence"].to_numpy(), sub["arousal"].to_numpy(), s=14, alpha=0.7, label=expr)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title(f"accepted faces (n={acc.height})")
    ax.legend(fontsize=7, loc="lower right")
    return figure_png(fig)


def au_prevalence_png(labels: pl.DataFrame) -> bytes | None:
    acc = labels.filter((pl.col("status") == "accepted") & pl.col("aus").is_not_null())
    if not acc.height:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sets = [set(a) for a in acc["aus"].to_list()]
    share = np.array([sum(au in s for s in sets) / len(sets) for au in AU_CATALOGUE])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([f"AU{a}" for a in AU_CATALOGUE], share, color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of faces")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.set_title(f"action units of accepted faces (n={acc.height})")
    return figure_png(fig)


def partition_plots(labels: pl.DataFrame, gold: Mapping[str, Labels]) -> dict[str, bytes]:
    """``{name: png}`` of the plots that have data in this partition."""
    out = {"confusion": audit_confusion_png(labels, gold) if labels.height else None,
           "va": va_plane_png(labels) if labels.height else None,
           "aus": au_prevalence_png(labels) if labels.height else None}
    return {k: v for k, v in out.items() if v is not None}
