"""Aggregation of Monte Carlo samples into one label per granularity (DESIGN.md §4).

* expression: majority vote, ties broken by the mean of the samples' class probabilities
  (a sample without probabilities counts as one-hot on its answer); the reported distribution
  is that mean, and the confidence is its value at the chosen class;
* valence–arousal: trimmed mean per axis (robust to a stray sample), confidence from the
  standard error of the mean;
* AUs: each sample votes present/absent per AU (its probability ≥ 0.5); an AU is present when
  most votes say so (an even split is settled by the mean probability). ``probs`` reports the
  mean probability per AU. Uncertainty and confidence come from the Beta posterior over the
  *votes*: Monte Carlo sampling measures disagreement between samples, and an annotator that
  says 0.5 every time is not made more certain by soft-counting it (it would never stop).

Only samples that parsed (``parse_status != "failed"``) reach these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from seke.annotation import Sample
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from seke.uncertainty import (au_tail_masses, au_uncertainty, expression_uncertainty,
                              va_standard_error, vote_counts)

#: Share trimmed from each end of the VA samples before averaging.
VA_TRIM = 0.2
#: Standard error at which VA confidence reaches 0 (confidence = 1 - se / scale).
VA_CONFIDENCE_SCALE = 0.5


@dataclass(frozen=True)
class ExpressionAggregate:
    label: str
    probs: list[float]          # aligned to EXPRESSIONS
    confidence: float
    uncertainty: float
    n: int


@dataclass(frozen=True)
class VAAggregate:
    valence: float
    arousal: float
    confidence: float
    uncertainty: float          # standard error of the mean (larger axis)
    n: int


@dataclass(frozen=True)
class AUAggregate:
    present: list[int]
    probs: list[float]          # aligned to AU_CATALOGUE: mean presence probability over samples
    confidence: float
    uncertainty: float          # largest per-AU posterior tail mass beyond 0.5
    n: int


def sample_distribution(sample: Sample) -> np.ndarray | None:
    """A sample's class distribution aligned to EXPRESSIONS, or None if it gave no expression."""
    e = sample.labels.expression
    if sample.expression_probs:
        p = np.array([max(0.0, float(sample.expression_probs.get(c, 0.0))) for c in EXPRESSIONS])
        if p.sum() > 0:
            return p / p.sum()
    if e in EXPRESSIONS:
        p = np.zeros(len(EXPRESSIONS))
        p[EXPRESSIONS.index(e)] = 1.0
        return p
    return None


def aggregate_expression(samples: Sequence[Sample], method: str = "dirichlet",
                         seed: int = 0) -> ExpressionAggregate | None:
    """Majority vote with probability tie-break; None when no sample named a valid class."""
    votes = [s.labels.expression for s in samples if s.labels.expression in EXPRESSIONS]
    dists = [d for d in (sample_distribution(s) for s in samples) if d is not None]
    if not votes:
        return None
    counts = vote_counts(votes)
    mean = np.mean(dists, axis=0) if dists else counts / counts.sum()
    best = counts.max()
    tied = [i for i, c in enumerate(counts) if c == best]
    idx = max(tied, key=lambda i: mean[i])
    return ExpressionAggregate(EXPRESSIONS[idx], [float(x) for x in mean], float(mean[idx]),
                               expression_uncertainty(votes, method, seed), len(votes))


def trimmed_mean(values: Sequence[float], proportion: float = VA_TRIM) -> float:
    """Mean after dropping ``floor(proportion·n)`` values from each end."""
    xs = sorted(values)
    cut = int(math.floor(proportion * len(xs)))
    kept = xs[cut:len(xs) - cut] if len(xs) - 2 * cut > 0 else xs
    return float(np.mean(kept))


def aggregate_va(samples: Sequence[Sample]) -> VAAggregate | None:
    """Trimmed-mean valence and arousal over samples that gave both; None when none did."""
    pts = [(float(s.labels.valence), float(s.labels.arousal)) for s in samples
           if s.labels.valence is not None and s.labels.arousal is not None
           and math.isfinite(s.labels.valence) and math.isfinite(s.labels.arousal)]
    if not pts:
        return None
    se = va_standard_error(pts)
    v = float(np.clip(trimmed_mean([p[0] for p in pts]), -1.0, 1.0))
    a = float(np.clip(trimmed_mean([p[1] for p in pts]), -1.0, 1.0))
    return VAAggregate(v, a, float(max(0.0, 1.0 - se / VA_CONFIDENCE_SCALE)), se, len(pts))


def au_presence(samples: Sequence[Sample]) -> dict[int, list[float]]:
    """Per catalogue AU, one probability per sample that coded AUs (missing AU = absent)."""
    coded = [s.labels.aus for s in samples if s.labels.aus is not None]
    return {au: [min(1.0, max(0.0, float(aus.get(au, 0.0)))) for aus in coded] for au in AU_CATALOGUE} if coded else {}


def aggregate_aus(samples: Sequence[Sample]) -> AUAggregate | None:
    """Per-AU majority of the samples' votes; None when no sample coded AUs."""
    presence = au_presence(samples)
    if not presence:
        return None
    votes = {au: [1.0 if p >= 0.5 else 0.0 for p in ps] for au, ps in presence.items()}
    mean_p = [float(np.mean(presence[au])) for au in AU_CATALOGUE]
    share = [float(np.mean(votes[au])) for au in AU_CATALOGUE]
    present = [au for au, v, m in zip(AU_CATALOGUE, share, mean_p) if v > 0.5 or (v == 0.5 and m >= 0.5)]
    tails = au_tail_masses(votes)
    conf = float(np.mean([1.0 - tails[au] for au in AU_CATALOGUE]))
    return AUAggregate(present, mean_p, conf, au_uncertainty(votes), len(next(iter(presence.values()))))
