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
