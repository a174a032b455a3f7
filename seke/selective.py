"""Selective acceptance with a certified error rate (Learn then Test).

Why: a confidence threshold picked by eye ("accept above 0.7") promises nothing about the
labels a user receives. Here the threshold is *certified* on audit faces (human label hidden,
:mod:`seke.audit`): with probability at least ``1 − delta`` over the draw of those faces, the
error rate among accepted labels of the same source is at most ``target``.

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan & Lei, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052, 2021). Each
threshold ``t`` of a grid fixed in advance (:data:`GRID`, steps of 0.01, 0.005 above 0.95) is
a hypothesis "selective error at ``t`` > target", tested with the exact binomial p-value
``P(Binom(n_acc, target) <= errors)`` (given the accepted count, errors among them are binomial
with the selective error rate). Multiplicity, two methods (:data:`METHODS`), both valid under
any dependence between the tests and without assuming the risk is monotone:

* ``fallback_chain``: fixed sequences from the 22 points of
  :data:`SEQUENCE_STARTS` on all audit faces, each holding an initial level ``delta / 22``; a
  rejected threshold passes its whole level on to the next lower one, where it adds to whatever
  level that one holds (the chain graph of Bretz, Maurer, Brannath & Posch, "A graphical
  approach to sequentially rejective multiple test procedures", Stat. Med. 2009; with weights
  only at the starts it is Wiens' fallback procedure, "A fixed sequence Bonferroni procedure for
  testing multiple endpoints", Pharm. Stat. 2003). Sequences stop at their first threshold that
  is not rejected and pool their levels where they meet, so where the risk grows smoothly the
  boundary is tested at the sum of the levels of the starts above it (``11 · delta / 22`` for a
  boundary at 0.50).
* ``split_start`` (the default): one fixed sequence at the full level ``delta``, whose start is chosen on a
  share (:data:`START_FRACTION`, a fifth) of the audit faces and tested on the rest. On the start
  faces each threshold's p-value is computed with the counts scaled to the test part's size, and
  the start is the threshold where it is smallest — where a rejection on the test faces is most
  likely; from there the thresholds are tested downward on the test faces alone. The start is
  independent of the faces that test it (the faces are split by a hash of their subject, or of
  their id), so the sequence is fixed in advance for the test (LTT §4's fixed-sequence testing);
  choosing it on the same faces would not be valid (a test shows the family-wise error of that
  shortcut far above ``delta``). This is information splitting, one of the learn-then-test
  paradigms compared by Chakraborty, Lee & Katsevich, "Comparing three learn-then-test paradigms
  in a multivariate normal means problem", arXiv:2601.07764, 2026.

Why the split is the default: with independent faces it spends all of ``delta`` on one sequence
where the chain spends part of it on starts that are never rejected, so it certifies more — in
the simulation of ``bench/certification_methods.py`` (more coverage in 24 of 36 settings, less in
none, its bound broken in at most 7 % of draws for ``delta`` 0.1) and on the dev faces (wild,
counting photos: 0.13 at target 0.05 and 0.19 at 0.10 where the chain certified nothing; wild
by person: 0.22 against 0.21 at 0.20; FER2013: 0.36 against 0.35 at 0.10 and 0.55 against 0.54
at 0.20, with the 0.6620 checkpoint of the README), with every realized error on the evaluation
half below its target. It was not
the default while both tests counted frames: on CK+, whose frames cluster by subject, it
certified threshold 0.75 at target 0.05 from 2 errors in 128 calibration frames and the
evaluation half's subjects had 15 wrong in 160. Testing subjects as units (below) removes that
failure; CK+'s calibration half, 46 subjects, is then too small to certify anything at these
targets with either method.

With either method the lowest rejected threshold (highest coverage) is certified; when none is
rejected, nothing is accepted (``threshold`` is None), and the certificate's ``procedure`` records the method (and, for the split, the start and
the faces on each side).

Faces that come in clusters (a source that names subjects: CK+'s frames, several per person,
or wild's photos of one person, err together) are not independent draws, and a test that counts frames is too sure of itself
(``bench/certification_methods.py`` shows it breaking its bound on clustered faces). There the
subject is the unit (:func:`cluster_units`): each subject contributes one value in [0, 1],
``target + (E − target · A) / m`` for its ``A`` accepted frames of ``m`` with summed loss ``E``
(:func:`unit_values`), whose mean is below ``target`` exactly when the error among accepted
labels, each subject weighing the same, is; the p-value is the betting test of Waudby-Smith &
Ramdas (:func:`wsr_p_values`), valid for i.i.d. subjects whatever the dependence of their frames
(the hierarchical setting of Lee, Barber & Willett, "Distribution-free inference with
hierarchical data", arXiv:2306.06342, 2023, where the group, not the observation, is the
exchangeable unit). The bound is then on labels of new subjects; with few subjects it is weak,
and the certificate says so by certifying little. Both methods use it; a source whose keys never
repeat (face ids) keeps the exact per-face tests.

A certificate is tied to what produced the confidences (annotator, knowledge and prompt
versions) and to one source: :meth:`Certificate.matches` refuses it for anything else, and
its ``version`` is a content hash. Labels below the threshold are abstained with reason
:data:`ABSTAIN_REASON`.

Granularities (:data:`GRANULARITIES`), each scored by a *raw* per-face score stored in
``verified_labels`` (:func:`face_score`, independent of any confidence calibration, so a refit
of the calibration never invalidates a certificate) and a per-face loss (:func:`face_loss`):

* ``expression``: score = the aggregated probability of the chosen class; loss = wrong class
  (0/1, exact binomial p-value);
* ``aus``: the *face* is the unit (its 23 AU decisions are not independent draws): score = mean
  over AUs of ``max(p, 1 − p)``; loss = the face's share of wrong AU decisions, a bounded loss
  in [0, 1] whose mean is the per-AU error among accepted faces. p-value: Hoeffding–Bentkus
  (Bates, Angelopoulos, Lei, Malik & Jordan 2021, "Distribution-free, risk-controlling
  prediction sets", §3; the LTT paper's bounded-loss p-value), valid for i.i.d. faces;
* ``va``: score = ``1 − SE/0.5`` of the VA samples; loss = |valence error| or |arousal error|
  above a tolerance (0/1, binomial).

Pipeline use: :func:`fit_certificates` (audit faces → certificates and a per-group report that
says why nothing was certified where that happens), :class:`CertificateSet` (the versioned
artefact), :func:`select_for` (the certificates a run may use, with refusal messages) and
:class:`Acceptance` (the per-row decision ``run_sampling`` applies).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy.stats import binom

from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

ABSTAIN_REASON = "below_certified_threshold"
GRANULARITIES: tuple[str, ...] = ("expression", "aus", "va")
#: Origin column of each granularity in ``verified_labels``.
ORIGIN_COLUMNS = {"expression": "expression_origin", "aus": "au_origin", "va": "va_origin"}
#: Standard error at which the raw VA confidence reaches 0 (as :data:`seke.aggregate.VA_CONFIDENCE_SCALE`).
VA_SE_SCALE = 0.5
#: Candidate thresholds, fixed before any data is seen (the tests are valid only then).
GRID: tuple[float, ...] = (tuple(round(0.01 * i, 2) for i in range(96))
                           + tuple(round(0.955 + 0.005 * i, 3) for i in range(9)))
#: Where the fixed sequences start; each walks down the grid from there (see the docstring).
#: They are the 22 thresholds of the earlier Bonferroni grid, tested at its level ``delta / 22``:
#: every threshold that method certified is still certified, the sequences only add finer ones.
SEQUENCE_STARTS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20)) + (0.975, 0.99)
SCHEMA_VERSION = 2
#: How the thresholds are tested (see the module docstring): ``fallback_chain`` tests every face
#: from the 22 :data:`SEQUENCE_STARTS`; ``split_start`` (the default) lets a share of the audit
#: faces choose where one fixed sequence starts and tests it on the rest at the full ``delta``.
METHODS: tuple[str, ...] = ("fallback_chain", "split_start")
DEFAULT_METHOD = "split_start"
#: Share of the audit faces that choose the start under ``split_start``; the rest test it.
START_FRACTION = 0.2


def fixed_sequence_rejections(grid: np.ndarray, p_values: np.ndarray, delta: float,
                              starts: Sequence[float] | None = None) -> np.ndarray:
    """Mask of the grid thresholds rejected by the fallback chain (see the module docstring):
    each start — the grid's point nearest it — begins with level ``delta / len(starts)``; walking
    down the grid, a threshold is rejected when its p-value is at most the level it holds, and
    then passes that level on to the next lower threshold. ``starts=()`` is never valid;
    ``starts=None`` means :data:`SEQUENCE_STARTS`."""
    starts_ = tuple(SEQUENCE_STARTS if starts is None else starts)
    if not starts_:
        raise ValueError("fixed-sequence testing needs at least one start")
    order = np.argsort(-grid, kind="stable")  # high threshold (few accepted) -> low
    g_desc = grid[order]
    level = np.zeros(len(grid))
    for s in starts_:
        level[int(np.argmin(np.abs(g_desc - s)))] += delta / len(starts_)
    rejected = np.zeros(len(grid), bool)
    # Levels only move down the chain, so one pass from the top settles every test.
    for i in range(len(order)):
        if level[i] > 0 and p_values[order[i]] <= level[i]:
            rejected[order[i]] = True
            if i + 1 < len(order):
                level[i + 1] += level[i]
    return rejected


def binomial_p_value(errors: int, n: int, target: float) -> float:
    """p-value of H0 "error rate > target" after ``errors`` errors in ``n`` accepted labels."""
    if n == 0:
        return 1.0
    return float(binom.cdf(errors, n, target))


def hb_p_value(mean_loss: float, n: int, target: float) -> float:
    """Hoeffding–Bentkus p-value of H0 "mean loss > target" for ``n`` i.i.d. losses in [0, 1]."""
    if n == 0:
        return 1.0
    r = min(mean_loss, target)
    h1 = (r * math.log(r / target) if r > 0 else 0.0) + (1 - r) * math.log((1 - r) / (1 - target))
    p_h = math.exp(-n * h1)
    p_b = math.e * float(binom.cdf(math.ceil(n * mean_loss), n, target))
    return float(min(1.0, p_h, p_b))


def grid_p_values(score: np.ndarray, losses: np.ndarray, grid: np.ndarray, target: float, bounded: bool,
                  scale: float = 1.0) -> np.ndarray:
    """p-value of "error at threshold ``t`` > target" for every grid threshold: exact binomial
    for 0/1 losses, Hoeffding–Bentkus for bounded ones. ``scale`` multiplies the counts (accepted
    faces and their summed loss) first: the p-value those faces' error rate would have on a set
    ``scale`` times as large, which is how ``split_start`` predicts the test part's p-values."""
    acc_m = score[None, :] >= grid[:, None]
    n_acc = np.round(acc_m.sum(1) * scale)
    loss_sum = (acc_m * losses[None, :]).sum(1) * scale
    if bounded:
        return np.array([hb_p_value(ls / na, int(na), target) if na else 1.0 for ls, na in zip(loss_sum, n_acc)])
    return np.where(n_acc > 0, binom.cdf(np.round(loss_sum), np.maximum(n_acc, 1), target), 1.0)


def wsr_p_values(values: np.ndarray, target: float, delta: float) -> np.ndarray:
    """Betting p-value of H0 "mean > target" for i.i.d. values in [0, 1], one per row of
    ``values`` (units along the columns, in an order fixed before their values are seen):
    Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B
    2024, in the form of Bates et al. (RCPS, §3.3): wealth ``K_i = prod_j (1 − λ_j (x_j −
    target))`` with the predictable plug-in bet ``λ_j = min(c, sqrt(2 log(1/delta) / (n σ̂²_{j−1})))``
    and p = 1 / max_i K_i (Ville's inequality). The cap ``c = 0.75 / (1 − target)`` keeps the
    wealth positive whatever a value in [0, 1] is, and lets a unit with no loss multiply it by
    up to ``1 + 0.75 · target / (1 − target)``."""
    x = np.atleast_2d(np.asarray(values, float))
    n = x.shape[1]
    if n == 0:
        return np.ones(x.shape[0])
    i = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(x, 1)) / (1 + i)
    var = (0.25 + np.cumsum((x - mu) ** 2, 1)) / (1 + i)
    var_before = np.concatenate([np.full((x.shape[0], 1), 0.25), var[:, :-1]], 1)
    lam = np.minimum(0.75 / (1 - target), np.sqrt(2 * math.log(1 / delta) / (n * var_before)))
    wealth = np.cumprod(1 - lam * (x - target), 1).max(1)
    return np.minimum(1.0, 1.0 / np.maximum(wealth, 1e-300))


def cluster_units(keys: Sequence[str] | None) -> np.ndarray | None:
    """Each face's unit (an index into its distinct keys, ordered by a hash of the key so the
    order is fixed before any loss is seen), or None when no key repeats — every face its own
    unit, where the exact per-face tests apply."""
    if keys is None or len(set(keys)) == len(keys):
        return None
    order = sorted(set(keys), key=lambda k: hashlib.sha256(f"selective-unit:{k}".encode()).digest())
    index = {k: i for i, k in enumerate(order)}
    return np.array([index[k] for k in keys], int)


def unit_values(score: np.ndarray, losses: np.ndarray, unit: np.ndarray, grid: np.ndarray, target: float
                ) -> np.ndarray:
    """Per grid threshold (rows) and unit (columns): ``target + (E − target · A) / m``, with A the
    unit's accepted faces, E their summed loss and m its faces, which lies in [0, 1]. Its mean
    exceeds ``target`` exactly when the error among accepted labels, each unit weighing the same,
    exceeds ``target``: the clustered tests' statistic."""
    n_units = int(unit.max()) + 1
    onehot = np.zeros((len(unit), n_units))
    onehot[np.arange(len(unit)), unit] = 1.0
    acc = (score[None, :] >= grid[:, None]).astype(float)
    size = onehot.sum(0)
    return target + (((acc * losses[None, :]) @ onehot) - target * (acc @ onehot)) / size[None, :]


def clustered_grid_p_values(score: np.ndarray, losses: np.ndarray, unit: np.ndarray, grid: np.ndarray,
                            target: float, delta: float, n_units: int | None = None) -> np.ndarray:
    """:func:`grid_p_values` for faces that come in clusters (frames of one subject): the unit
    is the cluster, its statistic :func:`unit_values`, the p-value :func:`wsr_p_values`.
    ``n_units`` repeats the units' values cyclically up to that many first: the p-value a set of
    that size with the same values would have (how ``split_start`` predicts the test part)."""
    if len(unit) == 0:
        return np.ones(len(grid))
    values = unit_values(score, losses, unit, grid, target)
    if n_units is not None:
        values = np.tile(values, (1, -(-n_units // values.shape[1])))[:, :n_units]
    return wsr_p_values(values, target, delta)


def threshold_p_values(score: np.ndarray, losses: np.ndarray, grid: np.ndarray, target: float, delta: float,
                  bounded: bool, unit: np.ndarray | None) -> np.ndarray:
    """The p-value every grid threshold is tested with: per face (:func:`grid_p_values`) or, for
    clustered faces (``unit`` from :func:`cluster_units`), per unit (:func:`clustered_grid_p_values`)."""
    if unit is None:
        return grid_p_values(score, losses, grid, target, bounded)
    return clustered_grid_p_values(score, losses, np.unique(unit, return_inverse=True)[1], grid, target, delta)


def start_part(n: int, keys: Sequence[str] | None = None, fraction: float = START_FRACTION) -> np.ndarray:
    """Mask of the audit faces that choose the start under ``split_start``: by a hash of each
    face's key (its subject where known, so one person's frames stay on one side) when ``keys``
    are given, else a fixed-seed random share of positions (then the order of the faces must not
    depend on their losses, as the lake's order does not). Independent of scores and losses:
    that is what keeps the test on the other part valid."""
    if keys is not None:
        if len(keys) != n:
            raise ValueError("keys and scores differ in length")
        cut = int(round(fraction * 2 ** 32))
        return np.array([int.from_bytes(hashlib.sha256(f"selective-start:{k}".encode()).digest()[:4], "big") < cut
                         for k in keys], bool)
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(0).permutation(n)[:int(round(fraction * n))]] = True
    return mask


def split_start_rejections(grid: np.ndarray, score: np.ndarray, losses: np.ndarray, target: float, delta: float,
                           bounded: bool, in_start: np.ndarray, unit: np.ndarray | None = None
                           ) -> tuple[np.ndarray, float, int]:
    """``split_start``: (rejection mask, start, faces that chose it). The start is the threshold
    whose p-value on the start faces, counts scaled to the test part's size, is smallest — where a
    rejection on the test faces is most likely (the top of the grid when no face chose); from it
    one fixed sequence walks down the grid on the test faces alone at level ``delta``. With
    ``unit`` (clusters, :func:`cluster_units`) both parts use the clustered p-values."""
    a, b = in_start, ~in_start
    n_a = int(a.sum())
    if unit is None:
        predicted = grid_p_values(score[a], losses[a], grid, target, bounded, scale=b.sum() / max(n_a, 1))
    else:
        predicted = clustered_grid_p_values(score[a], losses[a], np.unique(unit[a], return_inverse=True)[1], grid,
                                            target, delta, n_units=len(np.unique(unit[b])))
    p_test = threshold_p_values(score[b], losses[b], grid, target, delta, bounded, None if unit is None else unit[b])
    start = float(grid[int(np.argmin(predicted))]) if n_a else float(grid.max())
    return fixed_sequence_rejections(grid, p_test, delta, starts=(start,)), start, n_a


@dataclass(frozen=True)
class Certificate:
    """A certified confidence threshold for one (source, granularity) and its provenance."""

    source: str
    granularity: str
    target: float
    delta: float
    threshold: float | None              # None: nothing certified, accept nothing
    n_calibration: int
    calibration_error: float | None      # error among calibration labels at the threshold
    calibration_coverage: float          # accepted share of calibration labels
    versions: dict[str, str] = field(default_factory=dict)  # annotator / knowledge / prompt
    loss: str = "binary"                 # binary (0/1 errors) | bounded (mean of losses in [0, 1])
    transferred_from: str | None = None  # the bound was measured on this source, not on ``source``
    procedure: dict[str, Any] = field(default_factory=dict)  # method, units, start, faces that chose it / tested

    @property
    def version(self) -> str:
        # a certificate without ``procedure`` (written before the field) keeps its stored version
        payload = json.dumps({k: v for k, v in asdict(self).items() if k != "procedure" or v}, sort_keys=True)
        return f"sel-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    def accepts(self, confidence: float | None) -> bool:
        return self.threshold is not None and confidence is not None and confidence >= self.threshold

    def matches(self, source: str, versions: Mapping[str, str]) -> bool:
        """Whether the certificate applies: same source and the same producing versions."""
        return source == self.source and all(versions.get(k) == v for k, v in self.versions.items())

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "version": self.version, **asdict(self)}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Certificate":
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported certificate schema_version {d.get('schema_version')!r}")
        fields = {k: d[k] for k in ("source", "granularity", "target", "delta", "threshold", "n_calibration",
                                    "calibration_error", "calibration_coverage", "loss", "transferred_from")}
        cert = Certificate(**fields, versions=dict(d.get("versions", {})), procedure=dict(d.get("procedure") or {}))
        if d.get("version") and d["version"] != cert.version:
            raise ValueError(f"certificate altered: stored version {d['version']} != {cert.version}")
        return cert


def certify(confidence: Sequence[float], correct: Sequence[bool], target: float, delta: float = 0.1,
            *, source: str = "", granularity: str = "expression",
            versions: Mapping[str, str] | None = None, grid: Sequence[float] | None = None,
            method: str = DEFAULT_METHOD, keys: Sequence[str] | None = None) -> Certificate:
    """Learn-then-Test threshold on calibration pairs (see the module docstring)."""
    return certify_losses(confidence, 1.0 - np.asarray(correct, bool).astype(float), target, delta,
                          source=source, granularity=granularity, versions=versions, grid=grid,
                          method=method, keys=keys)


def certify_losses(score: Sequence[float], losses: Sequence[float], target: float, delta: float = 0.1,
                   *, bounded: bool = False, source: str = "", granularity: str = "expression",
                   versions: Mapping[str, str] | None = None, grid: Sequence[float] | None = None,
                   starts: Sequence[float] | None = None, method: str = DEFAULT_METHOD,
                   keys: Sequence[str] | None = None) -> Certificate:
    """Learn then Test with one loss per face: 0/1 losses (exact binomial) or, with ``bounded``,
    losses in [0, 1] (Hoeffding–Bentkus), by ``method`` (:data:`METHODS`; ``starts`` only for
    ``fallback_chain``, ``keys`` — one per face, e.g. its subject — only for ``split_start``).
    Raises ValueError for a target or delta outside (0, 1), an unknown method, non-finite
    scores or losses, or lengths that differ."""
    if not (0 < target < 1) or not (0 < delta < 1):
        raise ValueError(f"target and delta must lie in (0, 1), got target={target!r} delta={delta!r}")
    if method not in METHODS:
        raise ValueError(f"unknown certification method {method!r}: one of {', '.join(METHODS)}")
    c = np.asarray(score, float)
    loss = np.asarray(losses, float)
    if c.shape != loss.shape:
        raise ValueError("scores and losses differ in length")
    if not (np.isfinite(c).all() and np.isfinite(loss).all()):
        raise ValueError("scores and losses must be finite (drop NaN rows first)")
    if ((loss < 0) | (loss > 1)).any() or (not bounded and not np.isin(loss, (0.0, 1.0)).all()):
        raise ValueError("losses must lie in [0, 1] (0/1 unless bounded)")
    grid_ = np.asarray(GRID if grid is None else grid, float)
    n = len(c)
    if keys is not None and len(keys) != n:
        raise ValueError("keys and scores differ in length")
    unit = cluster_units(keys)
    procedure: dict[str, Any] = {"method": method}
    if unit is not None:
        procedure.update(units=int(unit.max()) + 1, p_value="betting (WSR), clusters as units")
    if method == "split_start":
        in_start = start_part(n, keys)
        mask, start, n_start = split_start_rejections(grid_, c, loss, target, delta, bounded, in_start, unit)
        procedure.update(start=start, start_faces=n_start, test_faces=n - n_start)
    else:
        p = threshold_p_values(c, loss, grid_, target, delta, bounded, unit)
        mask = fixed_sequence_rejections(grid_, p, delta, starts)
    rejected = grid_[mask]
    best = float(rejected.min()) if rejected.size else None
    acc = c >= best if best is not None else np.zeros(n, bool)
    return Certificate(source, granularity, float(target), float(delta), best, n,
                       float(loss[acc].mean()) if acc.any() else None,
                       float(acc.mean()) if n else 0.0, dict(versions or {}), "bounded" if bounded else "binary",
                       procedure=procedure)


def save(certificates: Iterable[Certificate], path: str | Path) -> Path:
    """Write certificates as one JSON artefact (atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([c.to_json() for c in certificates], indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def load(path: str | Path) -> list[Certificate]:
    return [Certificate.from_json(d) for d in json.loads(Path(path).read_text())]


def apply(rows: Iterable[Mapping[str, Any]], certificates: Sequence[Certificate],
          versions: Mapping[str, str], granularity: str = "expression",
          confidence_column: str = "expression_confidence",
          origin_column: str = "expression_origin") -> list[dict[str, Any]]:
    """Copies of label rows where an accepted, generated label below its source's certified
    threshold becomes abstained with :data:`ABSTAIN_REASON`. Human labels and sources without
    a matching certificate are left as they are."""
    out = []
    for r in rows:
        r = dict(r)
        cert = next((c for c in certificates if c.granularity == granularity
                     and c.matches(r.get("source", ""), versions)), None)
        if (cert is not None and r.get("status") == "accepted" and r.get(origin_column) not in (None, "human")
                and not cert.accepts(r.get(confidence_column))):
            r["status"], r["abstain_reason"] = "abstained", ABSTAIN_REASON
        out.append(r)
    return out


# ---- pipeline: targets, per-face scores and losses, fitting, the artefact, the decision -------

@dataclass(frozen=True)
class SelectiveTargets:
    """What a user asks of accepted labels (the ``refit_calibration`` run config derives from it).

    A target left ``None`` certifies nothing for that granularity (its labels are not filtered).
    Bad values are never raised at a run: :meth:`problems` lists them and the granularity is
    skipped, with the message in the metadata.
    """

    expression_error: float | None = field(default=0.10, metadata={
        "help": "most expression error rate among accepted labels (in (0, 1)); null: do not certify"})
    au_error: float | None = field(default=0.10, metadata={
        "help": "most per-AU error rate among accepted faces, the face as unit (in (0, 1)); null: do not certify"})
    va_error: float | None = field(default=None, metadata={
        "help": "most share of accepted faces with |valence| or |arousal| error above va_tolerance; null: do not certify"})
    va_tolerance: float = field(default=0.3, metadata={"help": "VA absolute error counted as wrong above this"})
    confidence: float = field(default=0.9, metadata={
        "help": "probability (1 - delta) that the bound holds over the draw of the audit faces"})
    min_audit_faces: int = field(default=50, metadata={
        "help": "fewest audit faces of a source and granularity to certify anything"})
    transfer: dict[str, str] = field(default_factory=dict, metadata={
        "help": "source without human labels -> source whose certificate it borrows (marked transferred, not measured)"})
    certification_method: str = field(default=DEFAULT_METHOD, metadata={
        "help": "how thresholds are tested: split_start (a fifth of the audit faces choose where one fixed "
                "sequence starts, the rest test it at the full level) or fallback_chain (22 fixed starts on all "
                "faces; certifies less); either tests subjects, not frames, where the source names them"})

    @property
    def delta(self) -> float:
        return 1.0 - self.confidence

    def target(self, granularity: str) -> float | None:
        return {"expression": self.expression_error, "aus": self.au_error, "va": self.va_error}[granularity]

    def problems(self) -> dict[str, str]:
        """``{granularity or "confidence": message}`` for every unusable setting."""
        out = {}
        if not _finite(self.confidence) or not 0 < self.confidence < 1:
            out["confidence"] = f"confidence must lie in (0, 1), got {self.confidence!r}: nothing certified"
        if self.certification_method not in METHODS:
            out["certification_method"] = (f"certification_method must be one of {', '.join(METHODS)}, "
                                           f"got {self.certification_method!r}: nothing certified")
        for g in GRANULARITIES:
            t = self.target(g)
            if t is not None and (not _finite(t) or not 0 < t < 1):
                out[g] = f"{g} target must lie in (0, 1), got {t!r}: {g} not certified"
        if not _finite(self.va_tolerance) or self.va_tolerance <= 0:
            out.setdefault("va", f"va_tolerance must be > 0, got {self.va_tolerance!r}: va not certified")
        for dst, src in self.transfer.items():
            if dst == src:
                out[f"transfer:{dst}"] = f"transfer {dst} -> {src} names the same source: ignored"
        return out

    def active(self) -> dict[str, float]:
        """Granularity -> target, for the usable targets only."""
        bad = self.problems()
        if "confidence" in bad or "certification_method" in bad:
            return {}
        return {g: t for g in GRANULARITIES if (t := self.target(g)) is not None and g not in bad}


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def face_score(row: Mapping[str, Any], granularity: str) -> float | None:
    """The raw (uncalibrated) per-face score certificates threshold; None when absent or not finite."""
    if granularity == "expression":
        probs, e = row.get("expression_probs"), row.get("expression")
        v = probs[EXPRESSIONS.index(e)] if probs is not None and e in EXPRESSIONS and len(probs) == len(EXPRESSIONS) \
            else row.get("expression_confidence")
    elif granularity == "aus":
        ps = [p for p in (row.get("au_probs") or []) if p is not None]
        if not ps or not all(_finite(p) for p in ps):
            return None
        v = float(np.mean([max(p, 1 - p) for p in ps]))
    elif granularity == "va":
        se = row.get("uncertainty_va")
        v = max(0.0, 1.0 - se / VA_SE_SCALE) if _finite(se) and row.get("valence") is not None else None
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    return float(v) if _finite(v) else None


def face_loss(row: Mapping[str, Any], gold: Any, granularity: str, va_tolerance: float = 0.3) -> float | None:
    """Loss of one face against its hidden human labels (``gold``: :class:`seke.annotation.Labels`)."""
    if granularity == "expression":
        if gold.expression is None or row.get("expression") is None:
            return None
        return float(row["expression"] != gold.expression)
    if granularity == "aus":
        if gold.aus is None or row.get("aus") is None:
            return None
        truth = {a for a, p in gold.aus.items() if p >= 0.5}
        got = set(row["aus"])
        return float(np.mean([(a in got) != (a in truth) for a in AU_CATALOGUE]))
    if granularity == "va":
        if gold.valence is None or gold.arousal is None or row.get("valence") is None or row.get("arousal") is None:
            return None
        return float(abs(row["valence"] - gold.valence) > va_tolerance or abs(row["arousal"] - gold.arousal) > va_tolerance)
    raise ValueError(f"unknown granularity {granularity!r}")


class AuditPoints(NamedTuple):
    """Per audited face: its score and loss; ``dropped`` counts faces whose score is missing or
    not finite (e.g. NaN probabilities); ``keys`` is each face's subject where known, else its id
    (the unit :func:`start_part` splits by)."""

    scores: np.ndarray
    losses: np.ndarray
    dropped: int
    keys: list[str]


def audit_points(rows: Sequence[Mapping[str, Any]], gold: Mapping[str, Any], granularity: str,
                 va_tolerance: float = 0.3) -> AuditPoints:
    """The :class:`AuditPoints` of the generated, SV-UAMC-accepted labels of audit faces."""
    sc, ls, keys, dropped = [], [], [], 0
    origin = ORIGIN_COLUMNS[granularity]
    for r in rows:
        g = gold.get(r["face_id"])
        if g is None or r.get("status") != "accepted" or r.get(origin) in (None, "human"):
            continue
        s, lo = face_score(r, granularity), face_loss(r, g, granularity, va_tolerance)
        if lo is None:
            continue
        if s is None:
            dropped += 1
            continue
        sc.append(s)
        ls.append(lo)
        keys.append(f"subject:{r['subject_id']}" if r.get("subject_id") else f"face:{r['face_id']}")
    return AuditPoints(np.asarray(sc, float), np.asarray(ls, float), dropped, keys)


def fit_certificates(groups: Mapping[tuple[str, tuple[tuple[str, str], ...]], Sequence[Mapping[str, Any]]],
                     gold: Mapping[str, Any], targets: SelectiveTargets
                     ) -> tuple[list[Certificate], dict[str, dict[str, Any]]]:
    """Certificates per (source, versions) group and granularity, plus a report keyed
    ``"<source>/<granularity>"`` saying what was certified or why nothing was. Never raises
    for bad data: too few audit faces, NaN scores or an unusable target end up in the report."""
    certs: list[Certificate] = []
    report: dict[str, dict[str, Any]] = {}
    problems = targets.problems()
    active = targets.active()
    for (source, vkey), rows in sorted(groups.items()):
        versions = dict(vkey)
        for g in GRANULARITIES:
            key = f"{source}/{g}"
            if targets.target(g) is None:
                continue
            if g not in active:
                report[key] = {"status": "not certified",
                               "reason": problems.get(g) or problems.get("confidence") or problems.get("certification_method")}
                continue
            sc, ls, dropped, keys = audit_points(rows, gold, g, targets.va_tolerance)
            entry: dict[str, Any] = {"audit_faces": int(len(sc)), "dropped_non_finite": dropped,
                                     "target": active[g], "confidence": targets.confidence, "versions": versions}
            if len(sc) < max(1, targets.min_audit_faces):
                entry.update(status="not certified",
                             reason=f"too few audit faces: {len(sc)} < min_audit_faces {targets.min_audit_faces}")
                report[key] = entry
                continue
            cert = certify_losses(sc, ls, active[g], targets.delta, bounded=(g == "aus"), source=source,
                                  granularity=g, versions=versions, method=targets.certification_method, keys=keys)
            certs.append(cert)
            entry.update(status="certified" if cert.threshold is not None else "nothing accepted",
                         threshold=cert.threshold, certificate=cert.version,
                         realized_error_in_sample=cert.calibration_error, coverage_in_sample=cert.calibration_coverage)
            if cert.threshold is None:
                entry["reason"] = (f"no threshold of the grid keeps the {g} error below {active[g]} at confidence "
                                   f"{targets.confidence} on {len(sc)} audit faces: every {g} label is abstained")
            report[key] = entry
    have = {c.source for c in certs}
    for dst, src in sorted(targets.transfer.items()):
        if dst == src:
            continue
        borrowed = [c for c in certs if c.source == src and c.transferred_from is None]
        if dst in have:
            report[f"{dst}/transfer"] = {"status": "ignored", "reason": f"{dst} has its own audit faces and certificate"}
            continue
        if not borrowed:
            report[f"{dst}/transfer"] = {"status": "not certified",
                                         "reason": f"transfer source {src} has no certificate"}
            continue
        for c in borrowed:
            t = Certificate(dst, c.granularity, c.target, c.delta, c.threshold, c.n_calibration, c.calibration_error,
                            c.calibration_coverage, dict(c.versions), c.loss, transferred_from=src,
                            procedure=dict(c.procedure))
            certs.append(t)
            report[f"{dst}/{c.granularity}"] = {"status": "transferred", "from": src, "threshold": t.threshold,
                                                "certificate": t.version,
                                                "note": f"bound measured on {src}, not on {dst}"}
    return certs, report


@dataclass(frozen=True)
class CertificateSet:
    """The versioned artefact: every certificate of one ``refit_calibration`` run."""

    certificates: tuple[Certificate, ...]
    created_at: str = ""
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        payload = json.dumps(sorted(c.version for c in self.certificates))
        return f"certs-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "version": self.version, "created_at": self.created_at,
                "targets": self.targets, "certificates": [c.to_json() for c in self.certificates]}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "CertificateSet":
        if not isinstance(d, Mapping) or d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported certificate-set schema_version {getattr(d, 'get', lambda k: None)('schema_version')!r}")
        out = CertificateSet(tuple(Certificate.from_json(c) for c in d["certificates"]), d.get("created_at", ""),
                             dict(d.get("targets") or {}))
        if d.get("version") and d["version"] != out.version:
            raise ValueError(f"certificate set altered: stored version {d['version']} != {out.version}")
        return out

    @staticmethod
    def make(certificates: Iterable[Certificate], targets: Mapping[str, Any] | None = None) -> "CertificateSet":
        return CertificateSet(tuple(certificates), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              dict(targets or {}))


def select_for(certs: CertificateSet | Sequence[Certificate] | None, source: str, versions: Mapping[str, str]
               ) -> tuple[dict[str, Certificate], list[str]]:
    """The certificates a run on ``source`` with ``versions`` may use (one per granularity), and
    a message for every certificate refused: another annotator/knowledge/prompt version, or no
    certificate for this source (a certificate of another source is never reused silently;
    name it in ``SelectiveTargets.transfer`` to borrow it)."""
    items = list(certs.certificates if isinstance(certs, CertificateSet) else (certs or []))
    use: dict[str, Certificate] = {}
    msgs: list[str] = []
    for c in items:
        if c.source != source:
            continue
        if c.matches(source, versions):
            use[c.granularity] = c
        else:
            diff = {k: (v, versions.get(k)) for k, v in c.versions.items() if versions.get(k) != v}
            msgs.append(f"certificate {c.version} ({source}/{c.granularity}) refused: fitted with "
                        + ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items()) + "; this run has "
                        + ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items()))
    if items and not any(c.source == source for c in items):
        others = sorted({c.source for c in items})
        msgs.append(f"no certificate for source {source!r} (certificates exist for {others}; another source's "
                    "bound is not reused unless named in transfer): labels are not certified")
    return use, [m for m in msgs if not any(m.startswith(f"certificate {u.version}") for u in use.values())]


@dataclass
class Acceptance:
    """The per-row decision at annotation time: a generated label whose raw score is below its
    certified threshold abstains the face with :data:`ABSTAIN_REASON` (kept for review)."""

    certificates: Mapping[str, Certificate]
    abstained: int = 0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("status") != "accepted":
            return row
        below = []
        for g, cert in self.certificates.items():
            if row.get(ORIGIN_COLUMNS[g]) in (None, "human"):
                continue
            s = face_score(row, g)
            if not cert.accepts(s):
                thr = "none certified" if cert.threshold is None else f"{cert.threshold:.3f}"
                below.append(f"{g} score {'n/a' if s is None else f'{s:.3f}'} < certified threshold {thr} "
                             f"({cert.version}{', transferred from ' + cert.transferred_from if cert.transferred_from else ''})")
        if below:
            self.abstained += 1
            row = {**row, "status": "abstained", "abstain_reason": ABSTAIN_REASON,
                   "verdict_reasons": "; ".join([r for r in [row.get("verdict_reasons")] if r] + below)}
        return row


def risk_coverage(scores: Sequence[float], losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, coverage, mean loss among accepted) over :data:`GRID`, for the curve."""
    c, lo = np.asarray(scores, float), np.asarray(losses, float)
    grid = np.asarray(GRID, float)
    cov, risk = [], []
    for t in grid:
        a = c >= t
        cov.append(a.mean() if len(c) else 0.0)
        risk.append(lo[a].mean() if a.any() else np.nan)
    return grid, np.asarray(cov), np.asarray(risk)


def read_current_certificates(lake: Any) -> CertificateSet | None:
    """The certificate set the last ``refit_calibration`` made current, or None. Raises
    ValueError with a clear message for an unreadable or altered artefact."""
    if not lake.exists("certificates_current"):
        return None
    row = lake.read_table("certificates_current").row(0, named=True)
    try:
        return CertificateSet.from_json(json.loads(row["artefact_json"]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"certificate artefact unreadable: {type(exc).__name__}: {exc}") from exc


def selective_acceptance(store: Any, source: str, versions: dict[str, str], enabled: bool
                         ) -> tuple[Acceptance | None, dict]:
    """The certified-acceptance decision for this partition and what the metadata says about it.
    An unreadable artefact or a certificate of another version is refused with a message; the
    batch goes on with uncertified labels."""
    if not enabled:
        return None, {"status": "off (run config selective=false)"}
    try:
        cset = read_current_certificates(store)
    except ValueError as exc:
        return None, {"status": "refused", "refused": [str(exc)], "note": "labels are not certified"}
    if cset is None:
        return None, {"status": "no certificate set (run refit_calibration with audit faces)"}
    use, refused = select_for(cset, source, versions)
    info = {"certificates_version": cset.version, "versions": versions, "refused": refused,
            "applied": {g: {"threshold": c.threshold, "target": c.target, "confidence": 1 - c.delta,
                            "certificate": c.version,
                            "bound": (f"transferred from {c.transferred_from}, not measured on {source}"
                                      if c.transferred_from else "measured on this source's audit faces")}
                        for g, c in use.items()}}
    info["status"] = "applied" if use else "not certified"
    return (Acceptance(use) if use else None), info
