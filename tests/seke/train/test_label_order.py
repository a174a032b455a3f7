"""Labels keep their meaning from a manifest to the expression head and back to a metric.

Why: a silent permutation anywhere between the dataset's label names, the packed ``.npz``, the
training targets and the evaluation's class order would leave training "working" (loss falls)
while validation sits at the base rate. These tests pin the class order end to end, with real
image files and a real ``.npz``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from seke.taxonomy import EXPRESSIONS
from seke.train.arrays import from_manifest
from seke.train.packing import load_npz, save_npz

# Names as datasets spell them (aliases included), each with its canonical class.
SPELLINGS = [("neutral", "neutral"), ("happy", "happiness"), ("sad", "sadness"),
             ("surprise", "surprise"), ("fear", "fear"), ("disgust", "disgust"),
             ("angry", "anger"), ("contempt", "contempt")]


def _manifest(folder, reps: int = 3) -> list[tuple[int, str]]:
    """One grey level per class (class k → 20 + 25k), ``reps`` faces each, in shuffled order."""
    (folder / "images").mkdir(parents=True)
    rows = [(k, spelled) for k, (spelled, _) in enumerate(SPELLINGS) for _ in range(reps)]
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "split", "expression"])
        for i, (k, spelled) in enumerate(rows):
            img = np.full((48, 48), 20 + 25 * k, np.uint8)
            img[i % 48, 0] = i  # unique bytes per face
            Image.fromarray(img, "L").save(folder / "images" / f"{i:03d}.png")
            w.writerow([f"images/{i:03d}.png", "train" if i % 2 else "validation", spelled])
    return rows


def test_labels_survive_manifest_and_npz_in_taxonomy_order(tmp_path):
    rows = _manifest(tmp_path / "set")
    arrays, errors = from_manifest(tmp_path / "set")
    assert not errors and len(arrays) == len(rows)
    back, _ = load_npz(save_npz(arrays, tmp_path / "x.npz"))
    for i, (k, spelled) in enumerate(rows):
        canonical = dict(SPELLINGS)[spelled]
        assert EXPRESSIONS[back.expression[i]] == canonical, (i, spelled)
        # the image travelling with the label is the one the manifest row names
        assert int(np.median(back.images[i])) == 20 + 25 * k
        assert back.split[i] == ("train" if i % 2 else "validation")
    assert back.expression_w.min() == 1.0 and set(back.expression_origin) == {"human"}


def test_expression_metrics_score_argmax_against_true_class():
    from seke.train.evaluate import expression_metrics

    gold = np.array([1, 1, 2, 6, -1])              # happiness, happiness, sadness, anger, unlabeled
    probs = np.zeros((5, len(EXPRESSIONS)))
    probs[[0, 1, 2, 3, 4], [1, 2, 2, 1, 0]] = 1.0  # predicted: happiness, sadness, sadness, happiness, –
    m = expression_metrics(probs, gold)
    assert m["n"] == 4 and m["accuracy"] == pytest.approx(0.5)
    f1 = m["f1_per_class"]
    assert set(f1) == {"happiness", "sadness", "anger"}
    assert f1["happiness"] == pytest.approx(0.5)   # tp 1, fp 1, fn 1
    assert f1["sadness"] == pytest.approx(2 / 3)   # tp 1, fp 1, fn 0
    assert f1["anger"] == 0.0
