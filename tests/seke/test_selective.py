"""Certified selective acceptance (Learn then Test): the guarantee holds on fresh faces."""

from __future__ import annotations

import numpy as np
import pytest

from seke.selective import ABSTAIN_REASON, Certificate, apply, binomial_p_value, certify, load, save

V = {"annotator": "offline-a", "knowledge": "v2", "prompt": "p1"}


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Confidence c ~ U(0.2, 1); the label is right with probability c (calibrated)."""
    c = rng.uniform(0.2, 1.0, n)
    return c, rng.random(n) < c


def test_binomial_p_value():
    assert binomial_p_value(0, 30, 0.1) == pytest.approx(0.9 ** 30)
    assert binomial_p_value(0, 0, 0.1) == 1.0
    assert binomial_p_value(10, 20, 0.1) > 0.99


def test_error_among_accepted_stays_below_target_with_probability_1_minus_delta():
    rng = np.random.default_rng(0)
    target, delta, reps, violations, coverages = 0.10, 0.10, 100, 0, []
    for _ in range(reps):
        cert = certify(*draw(3000, rng), target, delta)
        c, ok = draw(20000, rng)
        acc = c >= cert.threshold if cert.threshold is not None else np.zeros_like(ok)
        if acc.any() and 1 - ok[acc].mean() > target:
            violations += 1
        coverages.append(acc.mean())
    # guarantee: P(violation) <= delta; 100 draws, allow binomial slack (P(>=17 | p=.1) < 2%)
    assert violations <= 16
    # and it is not vacuous: with calibrated confidences a useful share is accepted
    assert np.mean(coverages) > 0.1


def test_nothing_certified_when_the_annotator_is_always_wrong():
    cert = certify([0.9, 0.95, 0.99] * 20, [False] * 60, 0.1)
    assert cert.threshold is None and cert.calibration_coverage == 0.0 and not cert.accepts(1.0)


def test_looser_target_never_lowers_coverage():
    rng = np.random.default_rng(1)
    c, ok = draw(2000, rng)
    cov = [certify(c, ok, t).calibration_coverage for t in (0.05, 0.10, 0.20)]
    assert cov[0] <= cov[1] <= cov[2] and cov[2] > cov[0]


def test_apply_abstains_below_threshold_only_for_matching_source_and_versions(tmp_path):
    cert = Certificate("ckplus", "expression", 0.1, 0.1, 0.8, 100, 0.05, 0.4, V)
    rows = [{"face_id": "a", "source": "ckplus", "status": "accepted", "expression_confidence": 0.5,
             "expression_origin": "verified"},
            {"face_id": "b", "source": "ckplus", "status": "accepted", "expression_confidence": 0.9,
             "expression_origin": "verified"},
            {"face_id": "c", "source": "ckplus", "status": "accepted", "expression_confidence": 0.1,
             "expression_origin": "human"},
            {"face_id": "d", "source": "wild", "status": "accepted", "expression_confidence": 0.1,
             "expression_origin": "generated"}]
    out = {r["face_id"]: r for r in apply(rows, [cert], V)}
    assert out["a"]["status"] == "abstained" and out["a"]["abstain_reason"] == ABSTAIN_REASON
    assert out["b"]["status"] == out["c"]["status"] == out["d"]["status"] == "accepted"
    stale = apply(rows, [cert], {**V, "prompt": "p2"})  # another prompt: the certificate does not apply
    assert all(r["status"] == "accepted" for r in stale)
    path = save([cert], tmp_path / "sel.json")
    assert load(path) == [cert]
    text = path.read_text().replace('"threshold": 0.8', '"threshold": 0.5')
    path.write_text(text)
    with pytest.raises(ValueError, match="altered"):
        load(path)
