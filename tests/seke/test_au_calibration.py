"""AU calibration: the shipped knowledge tables and the calibration routine on real CK+ rows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seke import weights
from seke.taxonomy import AU_CATALOGUE
from seke.vision.au_evidence import AU_BLENDSHAPES, load_table, models_from_table
from seke.vision.expression_fusion import load as load_fusion

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def test_shipped_au_table_covers_every_au_and_mode():
    table = load_table()
    models = models_from_table(table)
    assert {(m, a) for m in ("known", "blind") for a in AU_CATALOGUE} == set(models)
    assert table["version"].n_unique() == 1
    kinds = {(r["mode"], r["au"]): r["kind"] for r in table.iter_rows(named=True)}
    assert set(kinds.values()) == {"fitted", "knowledge_prior"}
    for (mode, au), m in models.items():
        assert 0 < m.threshold < 1
        assert set(m.groups) <= set(AU_BLENDSHAPES[au]) and len(m.coefs) == len(m.groups)
        if kinds[(mode, au)] == "knowledge_prior":   # the prior alone, decided at 0.5
            assert m.groups == () and m.threshold == 0.5 and m.intercept == 0
    # raised inner brows are evidence for AU1, and the fitted blind detector is good at it
    assert kinds[("blind", 1)] == "fitted" and models[("blind", 1)].coefs[0] > 0
    # the table records its own cross-validated AUC; whether the shipped models beat the bare
    # baselines is measured on dev data in test_shipped_tables.py
    row = table.filter((pl.col("au") == 1) & (pl.col("mode") == "blind")).row(0, named=True)
    assert 0.5 < row["cv_auc"] <= 1


def test_decision_probability_is_monotone_and_centred_on_threshold():
    models = models_from_table(load_table())
    m = models[("blind", 1)]
    bs = np.zeros(52)
    lo = m.decision_probability(bs, 0.2, 0.2)
    bs_raised = bs.copy()
    from seke.vision.landmarks import BLENDSHAPE_NAMES

    bs_raised[BLENDSHAPE_NAMES.index("browInnerUp")] = 0.9
    hi = m.decision_probability(bs_raised, 0.2, 0.2)
    assert 0 <= lo < 0.5 < hi <= 1


@pytest.mark.parametrize("mode", ["known", "blind"])
def test_a_knowledge_prior_row_decides_exactly_as_the_prior(mode):
    """Where calibration keeps the knowledge prior, the annotator's decision is the bare
    baseline's (prior >= 0.5), whatever the blendshapes say."""
    from seke.vision.calibrate_au import _knowledge_only_row

    row = {**_knowledge_only_row(12, mode), "n": 0, "n_pos": 0}
    m = models_from_table(pl.DataFrame([row]))[(mode, 12)]
    rng = np.random.default_rng(0)
    for prior in (0.02, 0.3, 0.49, 0.51, 0.7, 0.98):
        bs = rng.random(52)
        p = m.decision_probability(bs, prior, prior)   # blind: the prior is the expected prior
        assert (p >= 0.5) == (prior >= 0.5) and abs(p - prior) < 1e-9


def test_a_fitted_model_is_kept_only_when_it_beats_the_bare_baseline():
    from seke.vision.calibrate_au import fitted_beats_bare

    y = np.array([1, 1, 0, 0, 1, 0])
    perfect, one_wrong = y.astype(bool), np.array([1, 1, 1, 0, 1, 0], bool)
    assert fitted_beats_bare(perfect, one_wrong, y)
    assert not fitted_beats_bare(one_wrong, perfect, y)
    assert not fitted_beats_bare(one_wrong, one_wrong, y)   # a tie keeps the simpler prior


def test_shipped_expression_fusion_table_is_a_valid_softmax():
    fusion = load_fusion()
    assert fusion is not None and fusion.weights.shape == (7, 59)
    p = fusion.probs(np.full(7, 1 / 7), None)
    assert abs(p.sum() - 1) < 1e-9 and (p >= 0).all()
    # a confident fer answer stays the answer when there is no blendshape evidence
    onehot = np.full(7, 0.01)
    onehot[3] = 0.94
    assert int(np.argmax(fusion.probs(onehot, None))) == 3


def test_calibration_on_a_ckplus_subset(tmp_path):
    manifest = SHARED / "ckplus" / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"shared data missing: {manifest}")
    try:
        weights.path_of("face_landmarker.task")
    except weights.WeightsMissing as exc:
        pytest.skip(f"offline weights not fetched: {exc}")
    from seke.vision.calibrate_au import calibrate

    man = pl.read_csv(manifest)
    subjects = man["subject_id"].unique().sort()[:24]
    sub = man.filter(pl.col("subject_id").is_in(subjects.implode())).with_columns(
        (pl.lit(str(SHARED / "ckplus") + "/") + pl.col("image")).alias("image"))
    sub.write_csv(tmp_path / "manifest.csv")
    table, report = calibrate(tmp_path, folds=3)
    assert table.height == 2 * len(AU_CATALOGUE)
    assert set(table["mode"]) == {"known", "blind"}
    # Held-out (3-fold, subject-wise) mean F1 over the AUs with prevalence >= 5 % against the
    # bare baselines of the same faces. Blind, the blendshape models must beat the blind prior
    # (expression model + knowledge, no blendshapes). Known, 24 subjects cannot resolve the
    # gain over the knowledge prior (the two means differ in the second decimal), so only "not
    # worse" is asserted; the gain is asserted on all of CK+ in test_shipped_tables.py. A
    # failing assertion prints both means (no figure is quoted here: none has a command).
    from seke.vision.calibrate_au import EVAL_MIN_PREVALENCE

    ev = report.filter(pl.col("prevalence") >= EVAL_MIN_PREVALENCE)
    # Ranking too: blind, the blendshape models' held-out AUC, averaged over the same AUs, beats
    # the blind prior's (per AU it need not: AU12's prior is already near-perfect on CK+ smiles).
    assert ev["auc_blind"].mean() > ev["auc_blind_prior_only"].mean(), (
        ev["auc_blind"].mean(), ev["auc_blind_prior_only"].mean())
    assert ev["f1_blind"].mean() > ev["f1_blind_prior_only"].mean(), (
        ev["f1_blind"].mean(), ev["f1_blind_prior_only"].mean(), ev)
    assert ev["f1_known"].mean() >= ev["f1_prior_only"].mean(), (
        ev["f1_known"].mean(), ev["f1_prior_only"].mean(), ev)


def test_fit_logistic_is_the_penalised_optimum():
    """scikit-learn's fit of Σ log-loss + l2/2·||w||² (intercept free): the gradient vanishes."""
    from seke.vision.au_evidence import fit_logistic

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    y = (rng.random(300) < 1 / (1 + np.exp(-(x @ [1.5, -1.0, 0.0] + 0.3)))).astype(float)
    w = fit_logistic(x, y, l2=0.1)
    xa = np.hstack([np.ones((300, 1)), x])
    p = 1 / (1 + np.exp(-xa @ w))
    grad = xa.T @ (p - y) + np.r_[0.0, 0.1 * w[1:]]
    assert np.abs(grad).max() < 1e-4
    assert w[1] > 1 and w[2] < -0.5
    # one class only: no slope, the intercept carries the (clipped) base rate
    w0 = fit_logistic(x, np.zeros(300))
    assert (w0[1:] == 0).all() and 1 / (1 + np.exp(-w0[0])) < 1e-3


def test_fusion_fit_is_sklearn_multinomial_and_learns_blendshape_evidence():
    from seke.vision.expression_fusion import fit

    rng = np.random.default_rng(0)
    n = 700
    y = np.arange(n) % 7
    fer = rng.dirichlet(np.ones(7), n)
    bs = rng.uniform(0, 0.2, (n, 52))
    bs[y == 3, 0] += 0.8  # blendshape 0 marks class 3 (happy) where the fer model is uninformed
    model = fit(fer, bs, y, l2=1e-3)
    p = model.probs(fer, bs)
    assert np.allclose(p.sum(1), 1) and (p.argmax(1)[y == 3] == 3).mean() > 0.9
    with pytest.raises(ValueError, match="all 7 FER classes"):
        fit(fer[y < 6], bs[y < 6], y[y < 6])
