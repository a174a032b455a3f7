"""Emotion knowledge tables: how the three granularities correlate.

Two kinds of knowledge, both versioned:

* **Prototype knowledge (v1)**, from the literature:
  - EMFACS expression prototypes (Ekman & Friesen 1978/1983; Friesen & Ekman, "EMFACS-7",
    unpublished manual, as summarised in Matsumoto & Ekman 2008): happiness 6+12;
    sadness 1+4+15; surprise 1+2+5B+26; fear 1+2+4+5+7+20+26; anger 4+5+7+23;
    disgust 9+15+16; contempt R12A+R14A (unilateral).
  - Circumplex anchors for valence/arousal (Russell 1980, "A circumplex model of affect";
    Russell & Mehrabian 1977), used as regions with tolerances, not points.
* **Empirical knowledge**: P(AU | expression) estimated from any source that carries both
  granularities (CK+ has expression and FACS-coded AUs), with Laplace smoothing. Empirical
  frequencies are better than prototypes; each estimate gets its own version string.

Tables are plain polars frames so they can be written to the lake and queried with DuckDB.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import polars as pl

from seke.taxonomy import AU_CATALOGUE, AU_NAMES, EXPRESSIONS, au_column, normalise_expression

#: EMFACS prototype AUs per expression (see module docstring for sources).
EMFACS_PROTOTYPES: dict[str, tuple[int, ...]] = {
    "neutral": (),
    "happiness": (6, 12),
    "sadness": (1, 4, 15),
    "surprise": (1, 2, 5, 26),
    "fear": (1, 2, 4, 5, 7, 20, 26),
    "anger": (4, 5, 7, 23),
    "disgust": (9, 15, 16),
    "contempt": (12, 14),
}

#: Probability of a prototype AU / of any other AU under the prototype-only table.
PROTOTYPE_P_PRESENT = 0.75
PROTOTYPE_P_ABSENT = 0.05


@dataclass(frozen=True)
class VARegion:
    """An expression's region on the valence–arousal circumplex: centre ± tolerance."""

    valence: float
    arousal: float
    valence_tol: float
    arousal_tol: float

    def contains(self, valence: float, arousal: float) -> bool:
        return (abs(valence - self.valence) <= self.valence_tol
                and abs(arousal - self.arousal) <= self.arousal_tol)

    def distance(self, valence: float, arousal: float) -> float:
        """Normalised distance (1.0 = on the tolerance boundary)."""
        dv = (valence - self.valence) / self.valence_tol
        da = (arousal - self.arousal) / self.arousal_tol
        return float((dv * dv + da * da) ** 0.5)


#: Circumplex anchors (Russell 1980; Russell & Mehrabian 1977) with tolerances wide enough to
#: hold the spread of AffectNet's annotations around each class mean (Mollahosseini et al. 2017).
VA_REGIONS_V1: dict[str, VARegion] = {
    "neutral": VARegion(0.0, 0.0, 0.30, 0.30),
    "happiness": VARegion(0.8, 0.5, 0.45, 0.55),
    "sadness": VARegion(-0.6, -0.3, 0.45, 0.45),
    "surprise": VARegion(0.3, 0.7, 0.55, 0.40),
    "fear": VARegion(-0.6, 0.6, 0.45, 0.45),
    "disgust": VARegion(-0.6, 0.35, 0.45, 0.45),
    "anger": VARegion(-0.5, 0.6, 0.45, 0.45),
    "contempt": VARegion(-0.45, 0.2, 0.45, 0.40),
}


def prototype_expression_au() -> dict[str, dict[int, float]]:
    """P(AU present | expression) from the EMFACS prototypes alone."""
    return {
        e: {au: (PROTOTYPE_P_PRESENT if au in EMFACS_PROTOTYPES[e] else PROTOTYPE_P_ABSENT)
            for au in AU_CATALOGUE}
        for e in EXPRESSIONS
    }


@dataclass(frozen=True)
class Knowledge:
    """A versioned bundle of knowledge tables.

    ``expression_au[e][au]`` is P(AU present | expression e); ``va_regions[e]`` the circumplex
    region; ``extra`` carries annotator-specific tables (e.g. blendshape→AU calibration) by name.
    """

    version: str
    expression_au: dict[str, dict[int, float]]
    va_regions: dict[str, VARegion]
    provenance: str = "EMFACS prototypes + circumplex anchors"
    extra: dict[str, pl.DataFrame] = field(default_factory=dict)

    def au_prior(self, expression: str) -> dict[int, float]:
        return self.expression_au[expression]

    def fingerprint(self) -> str:
        """Content hash: prompts and caches key on it, so new knowledge never reuses old answers."""
        payload = json.dumps({
            "ea": {e: {str(a): round(p, 6) for a, p in t.items()} for e, t in self.expression_au.items()},
            "va": {e: [r.valence, r.arousal, r.valence_tol, r.arousal_tol] for e, r in self.va_regions.items()},
        }, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    # ---- tables for the lake -------------------------------------------------------------
    def expression_au_table(self) -> pl.DataFrame:
        rows = [{"expression": e, "au": au, "au_name": AU_NAMES[au], "p_present": p,
                 "prototype": au in EMFACS_PROTOTYPES[e]}
                for e, t in self.expression_au.items() for au, p in sorted(t.items())]
        return pl.DataFrame(rows).with_columns(pl.lit(self.version).alias("knowledge_version"))

    def va_region_table(self) -> pl.DataFrame:
        rows = [{"expression": e, "valence": r.valence, "arousal": r.arousal,
                 "valence_tol": r.valence_tol, "arousal_tol": r.arousal_tol}
                for e, r in self.va_regions.items()]
        return pl.DataFrame(rows).with_columns(pl.lit(self.version).alias("knowledge_version"))

    def au_catalogue_table(self) -> pl.DataFrame:
        return pl.DataFrame({"au": list(AU_CATALOGUE), "au_name": [AU_NAMES[a] for a in AU_CATALOGUE]}
                            ).with_columns(pl.lit(self.version).alias("knowledge_version"))

    def tables(self) -> dict[str, pl.DataFrame]:
        out = {"expression_au": self.expression_au_table(), "va_regions": self.va_region_table(),
               "au_catalogue": self.au_catalogue_table()}
        for name, df in self.extra.items():
            out[name] = df.with_columns(pl.lit(self.version).alias("knowledge_version"))
        return out


def knowledge_v1() -> Knowledge:
    """The literature-only knowledge bundle (no data needed)."""
    return Knowledge("v1", prototype_expression_au(), dict(VA_REGIONS_V1))


def estimate_expression_au(labelled: pl.DataFrame, alpha: float = 1.0,
                           prior: dict[str, dict[int, float]] | None = None,
                           prior_weight: float = 2.0) -> dict[str, dict[int, float]]:
    """Estimate P(AU | expression) from rows with ``expression`` and ``au<N>`` 0/1 columns.

    Frequencies shrunk toward ``prior`` (default: the EMFACS prototypes) with ``prior_weight``
    pseudo-observations plus ``alpha`` Laplace pseudo-observations at 0.5, so classes with few
    rows (or none: neutral in CK+) fall back to the literature instead of to 0.5.
    """
    prior = prior or prototype_expression_au()
    au_cols = [au_column(a) for a in AU_CATALOGUE if au_column(a) in labelled.columns]
    df = labelled.with_columns(
        pl.col("expression").map_elements(normalise_expression, return_dtype=pl.String)
    ).filter(pl.col("expression").is_not_null())
    out: dict[str, dict[int, float]] = {}
    for e in EXPRESSIONS:
        sub = df.filter(pl.col("expression") == e)
        n = sub.height
        table = {}
        for au in AU_CATALOGUE:
            col = au_column(au)
            k = float(sub[col].cast(pl.Float64).fill_null(0).sum()) if (col in au_cols and n) else 0.0
            coded = n if col in au_cols else 0
            p0 = prior[e][au]
            table[au] = ((k + prior_weight * p0 + alpha * 0.5) / (coded + prior_weight + alpha)
                         if coded else p0)
        out[e] = table
    return out


def knowledge_with_estimate(labelled: pl.DataFrame, source: str) -> Knowledge:
    """v1 knowledge whose P(AU | expression) is re-estimated from ``labelled`` rows."""
    base = knowledge_v1()
    est = estimate_expression_au(labelled)
    digest = hashlib.sha256(labelled.select(sorted(labelled.columns)).write_csv().encode()).hexdigest()[:8]
    return Knowledge(f"v1+{source}-{digest}", est, base.va_regions,
                     provenance=f"P(AU|expression) estimated from {source} ({labelled.height} rows), "
                                f"shrunk toward EMFACS prototypes; circumplex anchors v1")


def au_set_log_likelihood(aus: dict[int, float], prior: dict[int, float],
                          only: Iterable[int] | None = None) -> float:
    """Mean per-AU log-likelihood of a (binary or soft) AU set under an expression's AU profile."""
    import math

    keys = list(only) if only is not None else [a for a in prior if a in aus]
    if not keys:
        return 0.0
    total = 0.0
    for a in keys:
        p = min(max(prior[a], 1e-4), 1 - 1e-4)
        x = float(aus.get(a, 0.0))
        total += x * math.log(p) + (1 - x) * math.log(1 - p)
    return total / len(keys)


# ---- bundled, versioned estimates ------------------------------------------------------------
from pathlib import Path  # noqa: E402

KNOWLEDGE_DATA = Path(__file__).with_name("knowledge_data")
#: P(AU | expression) estimated from CK+ (FACS-coded, Lucey et al. 2010; AU matrix via NetFACS),
#: regenerated with ``python -m seke.knowledge estimate ../shared/data/ckplus/manifest.csv``.
CKPLUS_EXPRESSION_AU_CSV = KNOWLEDGE_DATA / "expression_au_ckplus.csv"
DEFAULT_VERSION = "v2"


def expression_au_from_table(df: pl.DataFrame) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {e: {} for e in EXPRESSIONS}
    for row in df.iter_rows(named=True):
        out[row["expression"]][int(row["au"])] = float(row["p_present"])
    return out


def load_knowledge(version: str = DEFAULT_VERSION) -> Knowledge:
    """A bundled knowledge version: ``v1`` (literature only) or ``v2`` (v1 + CK+ estimate)."""
    if version == "v1":
        return knowledge_v1()
    if version == "v2":
        df = pl.read_csv(CKPLUS_EXPRESSION_AU_CSV)
        return Knowledge("v2", expression_au_from_table(df), dict(VA_REGIONS_V1),
                         provenance="P(AU|expression) estimated from CK+ (bundled), shrunk toward "
                                    "EMFACS prototypes; circumplex anchors v1")
    raise KeyError(f"unknown knowledge version {version!r}; bundled: v1, v2")


def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Re-estimate the bundled P(AU | expression) table")
    p.add_argument("command", choices=["estimate"])
    p.add_argument("manifest", help="manifest.csv with expression and au<N> columns (e.g. CK+)")
    a = p.parse_args(argv)
    k = knowledge_with_estimate(pl.read_csv(a.manifest), "ckplus")
    k.expression_au_table().drop("knowledge_version").write_csv(CKPLUS_EXPRESSION_AU_CSV)
    print(f"wrote {CKPLUS_EXPRESSION_AU_CSV} ({k.provenance})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())


def knowledge_from_tables(version: str, expression_au: pl.DataFrame, va_regions: pl.DataFrame,
                          provenance: str = "") -> Knowledge:
    """Rebuild a :class:`Knowledge` from its lake tables (the inverse of :meth:`Knowledge.tables`)."""
    regions = {r["expression"]: VARegion(r["valence"], r["arousal"], r["valence_tol"], r["arousal_tol"])
               for r in va_regions.iter_rows(named=True)}
    return Knowledge(version, expression_au_from_table(expression_au), regions, provenance=provenance)


if TYPE_CHECKING:
    from seke.lake import Lake


# ---- the lake's current knowledge ---------------------------------------------------------------
#: Lake tables of a knowledge version are ``knowledge_<name>/version=<v>``; ``knowledge_current``
#: names the version the last ``knowledge`` materialization made current.
TABLE_PREFIX = "knowledge_"


def read_current_knowledge(lake: "Lake") -> Knowledge:
    """The knowledge version the last ``knowledge`` materialization made current."""
    if not lake.exists("knowledge_current"):
        raise RuntimeError("no knowledge in the lake yet: materialize the `knowledge` asset first")
    cur = lake.read_table("knowledge_current").row(0, named=True)
    v = cur["version"]
    ea = lake.read_partition(f"{TABLE_PREFIX}expression_au", {"version": v})
    va = lake.read_partition(f"{TABLE_PREFIX}va_regions", {"version": v})
    return knowledge_from_tables(v, ea, va, provenance=cur["provenance"])


def publish_knowledge(lake: "Lake", k: Knowledge) -> dict:
    """Write ``k``'s tables as version ``k.version`` and make it the lake's current knowledge;
    returns the commits by table name."""
    from datetime import datetime, timezone

    commits = {name: lake.write_partition(f"{TABLE_PREFIX}{name}", {"version": k.version}, df)
               for name, df in k.tables().items()}
    current = pl.DataFrame({"version": [k.version], "fingerprint": [k.fingerprint()],
                            "provenance": [k.provenance],
                            "materialized_at": [datetime.now(timezone.utc).isoformat()]})
    commits["current"] = lake.write_partition("knowledge_current", {}, current)
    return commits
