"""Uncertainty of Monte Carlo samples, one estimator per granularity (DESIGN.md §4).

SV-UAMC stops sampling a face once every missing granularity is certain enough. Each estimator
returns a number where *smaller is more certain*, so one rule ("stop when every uncertainty is
at or below its threshold") covers all three:

* expression: ``1 - P(leading class is the mode)`` under a Dirichlet posterior over the vote
  counts (sparse symmetric prior), or normalised vote entropy as the alternative;
* valence–arousal: the standard error of the mean, with a weak prior on the spread so that one
  sample or a few identical ones do not claim zero error;
* AUs: for every AU, the posterior mass of Beta(prior + present, prior + absent) on the far side
  of 0.5 from its mean; the face is uncertain while *any* AU's central credible interval at
  level ``1 - 2·t`` straddles 0.5, which is the same as that tail mass exceeding ``t``.

All functions are deterministic (the Dirichlet probability uses a fixed-seed Monte Carlo
integral), so re-running a partition reproduces the same stopping decisions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from scipy.special import betainc

from seke.taxonomy import EXPRESSIONS

#: Symmetric Dirichlet concentration per class. Sparse (< 1) because a VLLM's samples put
#: their mass on one or two classes, not spread over all eight.
DIRICHLET_PRIOR = 0.1
#: Draws for the Monte Carlo integral of P(leading class is the mode).
DIRICHLET_DRAWS = 4000
#: Prior on the spread of VA samples: pseudo-observations with this standard deviation.
VA_PRIOR_SD = 0.25
VA_PRIOR_WEIGHT = 1.0
#: Beta prior per AU (Jeffreys).
AU_PRIOR = 0.5


def vote_counts(expressions: Sequence[str | None]) -> np.ndarray:
    """Counts per class of :data:`EXPRESSIONS` (unknown names and ``None`` are ignored)."""
    counts = np.zeros(len(EXPRESSIONS))
    index = {e: i for i, e in enumerate(EXPRESSIONS)}
    for e in expressions:
        if e in index:
            counts[index[e]] += 1
    return counts


def prob_leading_is_mode(counts: np.ndarray, prior: float = DIRICHLET_PRIOR,
                         draws: int = DIRICHLET_DRAWS, seed: int = 0) -> float:
    """Posterior probability that the class with most votes has the largest true share.

    Ties between leading classes are broken by index (as the aggregator breaks them by
    probability, this slightly understates certainty for tied votes, which is the safe side).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.sum() <= 0:
        return 0.0
    return _prob_mode(tuple(float(c) for c in counts), prior, draws, seed)


@lru_cache(maxsize=65536)
def _prob_mode(counts: tuple[float, ...], prior: float, draws: int, seed: int) -> float:
    """Cached: vote counts repeat across faces and rounds, and the integral is deterministic."""
    lead = int(np.argmax(counts))
    rng = np.random.default_rng(seed)
    theta = rng.dirichlet(np.asarray(counts) + prior, size=draws)
    return float(np.mean(np.argmax(theta, axis=1) == lead))


def expression_uncertainty(expressions: Sequence[str | None], method: str = "dirichlet", seed: int = 0) -> float:
    """Uncertainty of the expression vote in [0, 1]; 1.0 when there is no valid vote."""
    counts = vote_counts(expressions)
    if counts.sum() == 0:
        return 1.0
    if method == "dirichlet":
        return 1.0 - prob_leading_is_mode(counts, seed=seed)
    if method == "entropy":
        p = counts / counts.sum()
        nz = p[p > 0]
        return float(max(0.0, -(nz * np.log(nz)).sum() / math.log(len(EXPRESSIONS))))
    raise ValueError(f"unknown expression uncertainty method {method!r}")


def va_standard_error(values: Sequence[tuple[float, float]], prior_sd: float = VA_PRIOR_SD,
                      prior_weight: float = VA_PRIOR_WEIGHT) -> float:
    """Larger of the valence and arousal standard errors of the mean (inf with no sample).

    The variance is shrunk toward ``prior_sd**2`` with ``prior_weight`` pseudo-observations:
    ``s² = (w·σ0² + Σ(x − x̄)²) / (w + n − 1)``, so three identical samples give a small but
    non-zero error and a single sample gives ``σ0``.
    """
    arr = np.asarray(values, dtype=float).reshape(-1, 2)
    n = arr.shape[0]
    if n == 0:
        return math.inf
    ss = ((arr - arr.mean(axis=0)) ** 2).sum(axis=0)
    var = (prior_weight * prior_sd ** 2 + ss) / (prior_weight + n - 1)
    return float(np.sqrt(var / n).max())


def au_tail_masses(presence: Mapping[int, Sequence[float]], prior: float = AU_PRIOR) -> dict[int, float]:
    """Per AU: posterior mass on the other side of 0.5 from the posterior mean.

    ``presence[au]`` holds one value per sample, 0/1 or a probability (soft counts).
    """
    if not presence:
        return {}
    aus = list(presence)
    s = np.array([float(np.clip(np.asarray(presence[au], dtype=float), 0.0, 1.0).sum()) for au in aus])
    n = np.array([len(presence[au]) for au in aus], dtype=float)
    below = betainc(prior + s, prior + n - s, 0.5)  # P(p < 0.5), vectorised over AUs
    return {au: float(min(b, 1.0 - b)) for au, b in zip(aus, below)}


def au_uncertainty(presence: Mapping[int, Sequence[float]], prior: float = AU_PRIOR) -> float:
    """Largest per-AU tail mass (0.5 = a coin flip); 1.0 when no AU evidence exists."""
    tails = au_tail_masses(presence, prior)
    if not tails or all(len(v) == 0 for v in presence.values()):
        return 1.0
    return max(tails.values())
