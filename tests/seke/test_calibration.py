"""Calibration: fitting improves ECE on held-out pairs; the artefact round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seke.audit import AuditPair
from seke.calibration import Calibration, fit_calibration, fit_isotonic, fit_temperature
from seke.metrics import ece


def overconfident_pairs(n: int, seed: int) -> list[AuditPair]:
    """Stated confidence c, true accuracy 0.5 + (c - 0.5) / 2: strongly over-confident."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 1.0, n)
    y = rng.random(n) < 0.5 + (c - 0.5) / 2
    return [AuditPair(f"f{i}", "expression", float(ci), bool(yi), True) for i, (ci, yi) in enumerate(zip(c, y))]


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibration_reduces_ece_on_held_out_pairs(method):
    fit, test = overconfident_pairs(2000, 1), overconfident_pairs(2000, 2)
    cal = fit_calibration(fit, method)
    raw = ece([p.confidence for p in test], [p.correct for p in test])
    new = ece([cal.apply(p.confidence, "expression") for p in test], [p.correct for p in test])
    assert raw > 0.1 and new < raw / 2


def test_temperature_above_one_for_overconfidence():
    ps = overconfident_pairs(2000, 3)
    assert fit_temperature([p.confidence for p in ps], [p.correct for p in ps]) > 1.5


def test_isotonic_is_monotone():
    x, y = fit_isotonic([0.9, 0.9, 0.6, 0.7, 0.95, 0.5], [0, 1, 1, 0, 1, 0])
    # scikit-learn's thresholds: both ends of each pooled block, so y has flat steps
    assert all(a < b for a, b in zip(x, x[1:])) and all(a <= b for a, b in zip(y, y[1:]))
    assert y[0] < y[-1]


def test_calibration_maps_equal_scikit_learn_fits():
    """Pinned on fixed pairs: the stored maps reproduce IsotonicRegression.predict and the
    unpenalised logistic regression on logit(c) (coefficient 1/T)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    ps = overconfident_pairs(400, 5)
    c = np.array([p.confidence for p in ps])
    ok = np.array([p.correct for p in ps])
    grid = np.linspace(0.0, 1.0, 41)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(c, ok.astype(float))
    cal = fit_calibration(ps, "isotonic")
    assert [cal.apply(v, "expression") for v in grid] == pytest.approx(iso.predict(grid), abs=1e-5)
    z = np.log(c / (1 - c))[:, None]
    lr = LogisticRegression(C=np.inf, fit_intercept=False).fit(z, ok)
    t = fit_temperature(c, ok)
    assert t == pytest.approx(1 / lr.coef_[0, 0], rel=1e-3)
    # and T minimises the binary NLL: nudging it either way does worse
    def nll(temp):
        q = 1 / (1 + np.exp(-z[:, 0] / temp))
        return -np.mean(np.where(ok, np.log(q), np.log(1 - q)))
    assert nll(t) < nll(t * 1.05) and nll(t) < nll(t / 1.05)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_artefact_round_trip(tmp_path, method):
    cal = fit_calibration(overconfident_pairs(500, 4), method, notes="test")
    path = cal.save(tmp_path / "cal" / f"{cal.version}.json")
    back = Calibration.load(path)
    assert back.version == cal.version and back.params == cal.params and back.fitted_on == {"expression": 500}
    for c in (0.55, 0.8, 0.99):
        assert back.apply(c, "expression") == pytest.approx(cal.apply(c, "expression"))
    assert back.apply(0.8, "va") == 0.8  # not fitted -> pass-through


def test_tampered_artefact_is_refused(tmp_path):
    cal = fit_calibration(overconfident_pairs(500, 5), "temperature")
    d = cal.to_json()
    d["params"]["expression"]["temperature"] = 0.1
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="altered"):
        Calibration.load(tmp_path / "c.json")


def test_apply_to_rows_leaves_human_confidences():
    cal = fit_calibration(overconfident_pairs(500, 6), "temperature")
    rows = [{"expression_confidence": 0.9, "expression_origin": "generated", "va_confidence": 1.0,
             "va_origin": "human", "au_confidence": None, "au_origin": None}]
    out = cal.apply_to_rows(rows)[0]
    assert out["expression_confidence"] < 0.9 and out["va_confidence"] == 1.0
    assert rows[0]["expression_confidence"] == 0.9


def _pairs_of(source: str, n: int, seed: int, overconfident: bool) -> list[AuditPair]:
    """Over-confident pairs, or calibrated ones (right with probability c), named by source."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 1.0, n)
    y = rng.random(n) < (0.5 + (c - 0.5) / 2 if overconfident else c)
    return [AuditPair(f"{source}{i}", "expression", float(ci), bool(yi), True, source) for i, (ci, yi) in enumerate(zip(c, y))]


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_each_source_with_enough_pairs_gets_its_own_map(tmp_path, method):
    """A posed source that is over-confident and a wild one that is calibrated: one pooled map
    is wrong for both; per-source maps fix each, a small source and unnamed rows use the pooled one."""
    fit = _pairs_of("posed", 1500, 1, True) + _pairs_of("wild", 1500, 2, False) + _pairs_of("tiny", 50, 3, False)
    test = {"posed": _pairs_of("posed", 3000, 4, True), "wild": _pairs_of("wild", 3000, 5, False)}
    pooled = fit_calibration(fit, method, min_source_pairs=10 ** 6)
    cal = fit_calibration(fit, method, min_source_pairs=200)
    assert not pooled.per_source and set(cal.per_source) == {"posed", "wild"}
    assert cal.fitted_on == {"expression": 3050, "expression@posed": 1500, "expression@wild": 1500}
    for src, ps in test.items():
        ok = [p.correct for p in ps]
        by_pooled = ece([pooled.apply(p.confidence, "expression", src) for p in ps], ok)
        by_source = ece([cal.apply(p.confidence, "expression", src) for p in ps], ok)
        assert by_source < min(0.05, by_pooled / 2), (src, by_source, by_pooled)
    for c in (0.6, 0.9):
        assert cal.apply(c, "expression", "tiny") == cal.apply(c, "expression") == pooled.apply(c, "expression")
    rows = [{"source": "posed", "expression_confidence": 0.9, "expression_origin": "generated"},
            {"source": "wild", "expression_confidence": 0.9, "expression_origin": "generated"}]
    posed, wild = (r["expression_confidence"] for r in cal.apply_to_rows(rows))
    assert posed < wild
    back = Calibration.load(cal.save(tmp_path / "c.json"))
    assert back.version == cal.version != pooled.version and back.per_source == cal.per_source
    assert back.apply(0.9, "expression", "posed") == pytest.approx(posed)


def test_a_pooled_only_artefact_keeps_the_version_it_had_before_per_source_maps():
    import hashlib

    cal = fit_calibration(overconfident_pairs(300, 8), "temperature")
    payload = json.dumps({"m": cal.method, "p": cal.params}, sort_keys=True)
    assert cal.version == f"cal-temperature-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"
    d = cal.to_json()
    del d["per_source"]  # an artefact written before per-source maps existed
    assert Calibration.from_json(d).version == cal.version
