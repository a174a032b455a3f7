"""The geometry verifier table loads, is a probability model, and feeds offline verification."""

from __future__ import annotations

import numpy as np

from seke.vision.expression import FER_CLASSES
from seke.vision.expression_geometry import GeometryClassifier, load
from seke.vision.features import GEOMETRY_IDXS, geometry_features


def test_packaged_table_loads_and_gives_distributions():
    m = load()
    assert m is not None and m.version == "expression_geometry_v1"
    d = 2 * len(GEOMETRY_IDXS) + 52
    assert m.weights.shape == (len(FER_CLASSES), d) and m.mean.shape == (d,)
    rng = np.random.default_rng(0)
    p = m.probs(rng.normal(size=(3, 2 * len(GEOMETRY_IDXS))) * 0.1, rng.uniform(size=(3, 52)))
    assert p.shape == (3, 7) and np.allclose(p.sum(1), 1)


def test_table_round_trip_and_geometry_is_pose_free():
    rng = np.random.default_rng(1)
    m = GeometryClassifier(rng.normal(size=5), np.ones(5), rng.normal(size=(7, 5)), rng.normal(size=7), "t")
    back = GeometryClassifier.from_table(m.to_table(fitted_on="x"))
    assert np.allclose(back.weights, m.weights) and np.allclose(back.mean, m.mean)
    pts = rng.uniform(0, 100, size=(478, 3))
    a = 0.3
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = pts.copy()
    moved[:, :2] = 2.5 * pts[:, :2] @ rot.T + 17
    assert np.allclose(geometry_features(pts), geometry_features(moved), atol=1e-9)


def test_independent_evidence_rejects_and_corrects():
    from seke.annotators.offline import OfflineAnnotator
    from seke.knowledge import knowledge_v1
    from seke.vision.features import ViewEvidence

    ann = OfflineAnnotator(knowledge_v1())
    ann.geometry = GeometryClassifier(np.zeros(53), np.ones(53), np.zeros((7, 53)), np.eye(7)[3] * 5, "t")  # says happy
    happy = np.eye(7)[3] * 0.9 + 0.1 / 7
    ev = ViewEvidence(happy, np.zeros(52), 0.9, np.zeros(1), happy)
    ev_geo = ViewEvidence(happy, np.zeros(52), 0.9, np.zeros(1), happy)
    reasons: list[str] = []
    probs = {e: 0.0 for e in ann._raw_probs(ev)}
    probs["sadness"], probs["happiness"] = 0.4, 0.5
    assert ann._independent_check(ev, "sadness", probs, ann._raw_probs(ev), reasons) == "happiness"
    sad_raw = {**ann._raw_probs(ev), "happiness": 0.1, "sadness": 0.8}
    assert ann._independent_check(ev_geo, "sadness", probs, sad_raw, reasons) == "reject"
    assert ann._independent_check(ev_geo, "happiness", probs, sad_raw, []) is None
