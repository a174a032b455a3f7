"""Cross-granularity consistency of one face's labels, scored against the knowledge tables.

Three independent tests, each giving a component score in [0, 1] and, when it fails, a flag:

* ``expr_aus_unlikely`` — the AU set is far more likely under another expression's AU profile
  (P(AU | expression) table) than under the claimed one. Component = posterior of the claimed
  expression given the AUs (uniform prior, naive-Bayes over AUs) divided by the best posterior.
* ``expr_va_outside_region`` — valence/arousal fall outside the expression's circumplex region,
  or break its sign rules (happiness → positive valence; sadness → negative valence and low
  arousal; surprise/fear/anger → positive arousal; neutral near the origin).
* ``aus_va_conflict`` — the AUs imply a valence sign the VA reading contradicts (a smile,
  AU12 without AU15, with clearly negative valence; brow lowerer/nose wrinkler/lip-corner
  depressor without a smile with clearly positive valence).

The face score is the mean of the components that could be computed (1.0 when none could).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seke.annotation import Labels
from seke.knowledge import Knowledge
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

#: Posterior ratio below which the AU set is called unlikely for the claimed expression.
AU_POSTERIOR_RATIO_FLOOR = 0.05
#: Normalised circumplex distance beyond which VA is outside the expression's region.
VA_DISTANCE_CEILING = 1.5

FLAGS = ("expr_aus_unlikely", "expr_va_outside_region", "aus_va_conflict")

#: Sign rules from the circumplex (Russell 1980): (min_valence, max_valence, min_arousal, max_arousal).
SIGN_RULES: dict[str, tuple[float, float, float, float]] = {
    "happiness": (0.0, 1.0, -1.0, 1.0),
    "sadness": (-1.0, 0.0, -1.0, 0.3),
    "surprise": (-1.0, 1.0, 0.0, 1.0),
    "fear": (-1.0, 0.1, 0.0, 1.0),
    "anger": (-1.0, 0.1, 0.0, 1.0),
    "disgust": (-1.0, 0.1, -1.0, 1.0),
    "contempt": (-1.0, 0.2, -1.0, 1.0),
    "neutral": (-0.4, 0.4, -0.4, 0.4),
}


@dataclass(frozen=True)
class ConsistencyResult:
    score: float
    flags: list[str] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        return not self.flags


def _au_vector(aus: dict[int, float]) -> dict[int, float]:
    return {a: min(max(float(aus.get(a, 0.0)), 0.0), 1.0) for a in AU_CATALOGUE}


def expression_posterior_from_aus(aus: dict[int, float], knowledge: Knowledge) -> dict[str, float]:
    """P(expression | AUs) under a uniform prior and independent AUs (naive Bayes)."""
    x = _au_vector(aus)
    logs = {}
    for e in EXPRESSIONS:
        prior = knowledge.au_prior(e)
        total = 0.0
        for a, xa in x.items():
            p = min(max(prior.get(a, 0.05), 1e-3), 1 - 1e-3)
            total += xa * math.log(p) + (1 - xa) * math.log(1 - p)
        logs[e] = total
    m = max(logs.values())
    z = sum(math.exp(v - m) for v in logs.values())
    return {e: math.exp(v - m) / z for e, v in logs.items()}


def _expr_aus(labels: Labels, knowledge: Knowledge) -> float | None:
    if labels.expression is None or labels.aus is None:
        return None
    post = expression_posterior_from_aus(labels.aus, knowledge)
    return post[labels.expression] / max(post.values())


def _expr_va(labels: Labels, knowledge: Knowledge) -> tuple[float, bool] | None:
    if labels.expression is None or labels.valence is None or labels.arousal is None:
        return None
    region = knowledge.va_regions[labels.expression]
    d = region.distance(labels.valence, labels.arousal)
    vmin, vmax, amin, amax = SIGN_RULES[labels.expression]
    sign_ok = vmin <= labels.valence <= vmax and amin <= labels.arousal <= amax
    score = math.exp(-max(0.0, d - 1.0)) * (1.0 if sign_ok else 0.3)
    return score, (d > VA_DISTANCE_CEILING or not sign_ok)


def _aus_va(labels: Labels) -> tuple[float, bool] | None:
    if labels.aus is None or labels.valence is None:
        return None
    x = _au_vector(labels.aus)
    smile = x[12] >= 0.5 and x[15] < 0.5
    negative = (x[4] >= 0.5 or x[9] >= 0.5 or x[15] >= 0.5) and x[12] < 0.5
    v = labels.valence
    if smile and v < -0.4:
        return max(0.0, 1.0 + (v + 0.4)), True
    if negative and v > 0.4:
        return max(0.0, 1.0 - (v - 0.4)), True
    return 1.0, False


def score_consistency(labels: Labels, knowledge: Knowledge) -> ConsistencyResult:
    """Score how well one face's expression, VA and AUs agree with each other and the knowledge."""
    flags: list[str] = []
    comps: dict[str, float] = {}
    ea = _expr_aus(labels, knowledge)
    if ea is not None:
        comps["expr_aus"] = ea
        if ea < AU_POSTERIOR_RATIO_FLOOR:
            flags.append("expr_aus_unlikely")
    ev = _expr_va(labels, knowledge)
    if ev is not None:
        comps["expr_va"], bad = ev
        if bad:
            flags.append("expr_va_outside_region")
    av = _aus_va(labels)
    if av is not None:
        comps["aus_va"], bad = av
        if bad:
            flags.append("aus_va_conflict")
    score = sum(comps.values()) / len(comps) if comps else 1.0
    return ConsistencyResult(float(score), flags, comps)
