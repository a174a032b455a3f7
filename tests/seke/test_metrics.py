"""Metrics on hand-made cases whose answers were worked out on paper (see comments)."""

import math

import numpy as np
import pytest

from seke import metrics as m

T = ["a", "a", "b", "b", "c"]
P = ["a", "b", "b", "b", "a"]


def test_expression_metrics():
    assert m.accuracy(T, P) == pytest.approx(0.6)
    # a: tp1 fp1 fn1 -> 0.5 ; b: tp2 fp1 -> 0.8 ; c: tp0 fn1 -> 0
    assert m.per_class_f1(T, P) == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
    assert m.macro_f1(T, P) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # a class in the label list but absent from gold and prediction does not dilute macro-F1
    assert m.macro_f1(T, P, labels=["a", "b", "c", "d"]) == pytest.approx(1.3 / 3)
    assert m.confusion_matrix(T, P, ["a", "b", "c"]).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_missing_predictions_are_dropped_pairwise():
    assert m.accuracy(["a", "b", "c"], ["a", None, "x"]) == pytest.approx(0.5)
    assert math.isnan(m.accuracy(["a"], [None]))
    with pytest.raises(ValueError):
        m.accuracy(["a"], ["a", "b"])


def test_va_metrics():
    assert m.rmse([0, 0, 0, 0], [1, -1, 1, -1]) == pytest.approx(1.0)
    assert m.rmse([1, 2, 3], [1, 2, None]) == pytest.approx(0.0)
    assert m.ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert m.ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)  # 2*(2/3) / (2/3+2/3+1)
    assert m.ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(m.ccc([1, 1], [1, 1]))
    assert m.sign_agreement([0.5, -0.5, 0.2, -0.1], [0.1, 0.3, -0.4, -0.9]) == pytest.approx(0.5)
    assert m.sign_agreement([0.05, -0.5], [-0.05, -0.2], tolerance=0.1) == pytest.approx(1.0)


def test_au_metrics():
    t = [{1, 2}, {2}, set()]
    p = [{1}, {2, 4}, {4}]
    f = m.per_au_f1(t, p, [1, 2, 4, 5])
    assert f == pytest.approx({1: 1.0, 2: 2 / 3, 4: 0.0})  # AU5 never present -> left out
    assert m.mean_au_f1(t, p, [1, 2, 4, 5]) == pytest.approx(5 / 9)
    assert m.per_au_f1([{1}, None], [None, {1}], [1]) == {}


def test_calibration_metrics():
    conf, ok = [0.9, 0.9, 0.6, 0.6], [True, False, True, True]
    # bin(0.9): acc 0.5 vs 0.9 -> 0.4*2 ; bin(0.6): acc 1 vs 0.6 -> 0.4*2 ; /4
    assert m.ece(conf, ok) == pytest.approx(0.4)
    assert m.brier(conf, ok) == pytest.approx((0.01 + 0.81 + 0.16 + 0.16) / 4)
    assert m.ece([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    # binning matters: 15 bins separate 0.2 and 0.8, one bin merges them into a perfect 0.5
    assert m.ece([0.2, 0.8], [False, True]) == pytest.approx(0.2)
    assert m.ece([0.2, 0.8], [False, True], n_bins=1) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        m.ece([1.2], [True])


def test_multiclass_brier():
    probs = [[1.0, 0.0], [0.5, 0.5]]
    assert m.multiclass_brier(probs, ["x", "x"], ["x", "y"]) == pytest.approx((0 + 0.5) / 2)
    assert np.isnan(m.multiclass_brier([None], ["x"], ["x", "y"]))


# ---- pinned against scikit-learn on fixed inputs (issue 15, item 3) -------------------------

from sklearn import metrics as skm  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402

from seke.taxonomy import EXPRESSIONS  # noqa: E402

# The disagreement measured on main: one class predicted but never gold.
GOLD4 = ["happiness", "happiness", "sadness", "sadness"]
PRED4 = ["happiness", "happiness", "sadness", "anger"]


def test_four_prediction_example_uses_gold_union_predicted_classes():
    # happiness 1.0, sadness 2/3, anger 0 (predicted, never gold) -> 5/9 = 0.556, not 0.833
    assert m.f1_labels(GOLD4, PRED4, EXPRESSIONS) == ["happiness", "sadness", "anger"]
    assert m.macro_f1(GOLD4, PRED4, EXPRESSIONS) == pytest.approx(5 / 9)
    assert m.macro_f1(GOLD4, PRED4, EXPRESSIONS) == pytest.approx(
        skm.f1_score(GOLD4, PRED4, labels=["happiness", "sadness", "anger"], average="macro"))
    # scikit-learn's own default (labels=None) is the same union
    assert m.macro_f1(GOLD4, PRED4, EXPRESSIONS) == pytest.approx(skm.f1_score(GOLD4, PRED4, average="macro"))


def test_every_caller_scores_the_four_predictions_alike():
    from seke.audit import audit_report
    from seke.annotation import Labels

    rows = [{"face_id": f"f{i}", "status": "accepted", "expression": p} for i, p in enumerate(PRED4)]
    gold = {f"f{i}": Labels(expression=g) for i, g in enumerate(GOLD4)}
    assert audit_report(rows, gold)["expression_macro_f1"] == pytest.approx(5 / 9)


def test_train_evaluate_uses_the_same_macro_f1():
    pytest.importorskip("torch")
    from seke.train.evaluate import expression_metrics

    probs = np.zeros((4, len(EXPRESSIONS)))
    probs[np.arange(4), [EXPRESSIONS.index(p) for p in PRED4]] = 1.0
    got = expression_metrics(probs, np.array([EXPRESSIONS.index(g) for g in GOLD4]))
    assert got["macro_f1"] == pytest.approx(5 / 9)


def test_prediction_outside_the_taxonomy_is_an_error_not_a_class():
    t, p = ["happiness", "sadness"], ["happiness", "banana"]
    assert m.f1_labels(t, p, EXPRESSIONS) == ["happiness", "sadness"]
    assert m.macro_f1(t, p, EXPRESSIONS) == pytest.approx(
        skm.f1_score(t, p, labels=["happiness", "sadness"], average="macro", zero_division=0))
    assert m.macro_f1(t, p, EXPRESSIONS) == pytest.approx(0.5)


RNG = np.random.default_rng(7)
G = list(RNG.choice(list(EXPRESSIONS[:6]), 200))
P_ = [g if RNG.random() < 0.6 else str(RNG.choice(list(EXPRESSIONS))) for g in G]


def test_expression_metrics_match_sklearn_on_random_inputs():
    labels = m.f1_labels(G, P_, EXPRESSIONS)
    assert m.accuracy(G, P_) == pytest.approx(skm.accuracy_score(G, P_))
    assert m.macro_f1(G, P_, EXPRESSIONS) == pytest.approx(skm.f1_score(G, P_, labels=labels, average="macro"))
    per = m.per_class_f1(G, P_, EXPRESSIONS)
    assert list(per.values()) == pytest.approx(list(skm.f1_score(G, P_, labels=labels, average=None)))
    assert (m.confusion_matrix(G, P_, EXPRESSIONS) == skm.confusion_matrix(G, P_, labels=list(EXPRESSIONS))).all()


def test_va_and_confidence_metrics_match_sklearn():
    t, p = RNG.uniform(-1, 1, 100), RNG.uniform(-1, 1, 100)
    assert m.rmse(t, p) == pytest.approx(skm.root_mean_squared_error(t, p))
    conf = RNG.uniform(0, 1, 300)
    ok = RNG.random(300) < conf ** 2
    assert m.brier(conf, ok) == pytest.approx(skm.brier_score_loss(ok, conf))
    # ECE from scikit-learn's calibration curve, weighted by the counts of its (same) bins
    prob_true, prob_pred = calibration_curve(ok, conf, n_bins=15)
    acc, mean_conf, counts = m.reliability_curve(conf, ok)
    assert acc == pytest.approx(prob_true) and mean_conf == pytest.approx(prob_pred)
    assert counts.sum() == 300
    assert m.ece(conf, ok) == pytest.approx(float(np.sum(np.abs(prob_true - prob_pred) * counts) / 300))
    # a confidence on a bin edge falls in the lower bin, as in scikit-learn
    assert m.ece([0.2, 0.2], [True, True], n_bins=5) == pytest.approx(0.8)


def test_au_f1_matches_sklearn_per_au():
    aus = [1, 2, 4, 12, 27]
    t = [set(RNG.choice(aus[:4], RNG.integers(0, 3), replace=False)) for _ in range(60)]
    p = [set(RNG.choice(aus[:4], RNG.integers(0, 3), replace=False)) for _ in range(60)]
    per = m.per_au_f1(t, p, aus)
    assert set(per) == {1, 2, 4, 12}  # AU27 has no positive anywhere
    for au, f in per.items():
        assert f == pytest.approx(skm.f1_score([au in s for s in t], [au in s for s in p]))
    assert math.isnan(m.binary_f1([False, False], [0, 0]))
    assert m.roc_auc([0.1, 0.9, 0.4], [0, 1, 1]) == pytest.approx(skm.roc_auc_score([0, 1, 1], [0.1, 0.9, 0.4]))


def test_multiclass_brier_matches_sklearn_with_taxonomy_column_order():
    probs = RNG.dirichlet(np.ones(len(EXPRESSIONS)), 50)
    gold = list(RNG.choice(list(EXPRESSIONS), 50))
    onehot = np.array([[g == e for e in EXPRESSIONS] for g in gold], float)
    assert m.multiclass_brier(list(probs), gold, EXPRESSIONS) == pytest.approx(
        float(np.mean(np.sum((probs - onehot) ** 2, axis=1))))


def test_f1_at_thresholds_equals_sklearn_at_each_cut():
    scores = np.round(RNG.uniform(0, 1, 80), 2)  # ties on purpose
    y = (RNG.random(80) < scores).astype(int)
    cuts = np.unique(np.concatenate([scores, [0.0, 0.5, 1.01]]))
    got = m.f1_at_thresholds(scores, y, cuts)
    want = [skm.f1_score(y, scores >= t, zero_division=np.nan) for t in cuts]
    assert got == pytest.approx(np.array(want), nan_ok=True)
    assert math.isnan(m.f1_at_thresholds([0.2], [0], [0.5])[0])


def test_most_confident_keeps_the_share_a_threshold_would_accept():
    conf = [0.2, 0.9, 0.5, 0.9, 0.1]
    vals = [1.0, 0.0, 1.0, 1.0, 0.0]
    assert m.most_confident(conf, vals, 0.4) == [0.0, 1.0]      # the two 0.9s, input order
    assert m.most_confident(conf, vals, 0.6) == [0.0, 1.0, 1.0]
    assert m.most_confident(conf, vals, 0.0) == []
    assert m.most_confident(conf, vals, float("nan")) == []
    with pytest.raises(ValueError):
        m.most_confident(conf, vals[:2], 0.5)
