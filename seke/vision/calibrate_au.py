"""Calibrate the blendshape -> AU models on a FACS-coded set and write the knowledge table.

    python -m seke.vision.calibrate_au --data ../shared/data/ckplus [--out seke/knowledge_data/au_calibration_v1.csv]

Reads a manifest with ``expression``, ``subject_id`` and binary ``au<N>`` columns (CK+ format),
runs the offline models once per image (identity view), then:

1. **Subject-wise K-fold cross-validation** (no subject in both train and test): in each fold,
   P(AU | expression) is re-estimated from the training subjects only, each AU's logistic model
   (see :mod:`seke.vision.au_evidence`) and its F1-optimal threshold are fitted on the training
   subjects, and the held-out subjects are predicted. The printed per-AU F1 (known / blind, and
   the bare baselines they must beat: the knowledge prior alone with the expression known, and
   the blind prior sum_e P(e | image) P(AU | e) without blendshapes) are therefore honest
   held-out figures (``tests/seke/test_shipped_tables.py`` checks the gains on all of CK+).
2. A final fit on all rows gives the table that ships, with the CV figures in its columns.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from seke.knowledge import estimate_expression_au
from seke.metrics import binary_f1 as f1
from seke.metrics import roc_auc as auc
from seke.taxonomy import AU_CATALOGUE, AU_NAMES, au_column, normalise_expression
from seke.vision.au_evidence import (AU_BLENDSHAPES, DEFAULT_TABLE, expected_au_prior, fer_to_taxonomy_dict,
                                     best_threshold, fit_logistic, group_value, logit, table_path)
from seke.vision.runtime import MODEL_VERSION

TABLE_VERSION = "au_calibration_v1"
MIN_POSITIVES = 8
#: Mean F1 is summarised over AUs with at least this base rate (rarer AUs have too few positives
#: for a stable F1; the same set is used for every method, prior-only included).
EVAL_MIN_PREVALENCE = 0.05   # fewer training positives: image coefficients are not fitted (knowledge only)
L2 = 0.1


def extract_features(data: Path, manifest: pl.DataFrame, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Identity-view FER probabilities and blendshapes for every manifest row (cached by content)."""
    from seke.vision.features import view_evidence

    key = hashlib.sha256(("|".join(manifest["image"].to_list()) + MODEL_VERSION + str(data.resolve())).encode()).hexdigest()[:16]
    if cache is not None:
        f = cache / f"features-{key}.npz"
        if f.exists():
            d = np.load(f)
            return {k: d[k] for k in d.files}
    fer, bs = [], []
    for rel in manifest["image"]:
        ev = view_evidence(Image.open(data / rel), refine=False)
        fer.append(ev.fer_probs)
        bs.append(ev.blendshapes)
    out = {"fer": np.array(fer), "bs": np.array(bs)}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / f"features-{key}.npz", **out)
    return out


def design(au: int, groups: tuple[str, ...], bs: np.ndarray, prior: np.ndarray, expected: np.ndarray | None
           ) -> np.ndarray:
    """Columns: blendshape groups, logit(prior), and logit(expected prior) in known mode."""
    cols = [[group_value(b, g) for g in groups] for b in bs]
    x = np.array(cols, dtype=np.float64).reshape(len(bs), len(groups))
    extra = [logit(prior)[:, None]] + ([logit(expected)[:, None]] if expected is not None else [])
    return np.hstack([x, *extra])


def priors(expression_au: dict, expressions: list[str], fer: np.ndarray, au: int) -> dict[str, np.ndarray]:
    known = np.array([expression_au[e][au] for e in expressions])
    blind = np.array([expected_au_prior(fer_to_taxonomy_dict(p), expression_au, au) for p in fer])
    return {"known": known, "blind": blind}


def fit_au(au: int, mode: str, bs: np.ndarray, pr: dict[str, np.ndarray], y: np.ndarray) -> dict:
    groups = AU_BLENDSHAPES[au] if y.sum() >= MIN_POSITIVES else ()
    expected = pr["blind"] if mode == "known" else None
    x = design(au, groups, bs, pr[mode], expected)
    w = fit_logistic(x, y.astype(np.float64), l2=L2)
    p = 1 / (1 + np.exp(-np.clip(np.hstack([np.ones((len(x), 1)), x]) @ w, -50, 50)))
    ng = len(groups)
    return {"groups": groups, "intercept": float(w[0]), "coefs": [float(c) for c in w[1:1 + ng]],
            "prior_coef": float(w[1 + ng]), "expr_coef": float(w[2 + ng]) if mode == "known" else 0.0,
            # too few positives for a stable F1-optimal threshold: keep the plain 0.5
            "threshold": best_threshold(p, y) if y.sum() >= MIN_POSITIVES else 0.5}


def predict(model: dict, au: int, mode: str, bs: np.ndarray, pr: dict[str, np.ndarray]) -> np.ndarray:
    expected = pr["blind"] if mode == "known" else None
    x = design(au, model["groups"], bs, pr[mode], expected)
    w = np.array([model["intercept"], *model["coefs"], model["prior_coef"]]
                 + ([model["expr_coef"]] if mode == "known" else []))
    return 1 / (1 + np.exp(-np.clip(np.hstack([np.ones((len(x), 1)), x]) @ w, -50, 50)))


def subject_folds(subjects: list[str], k: int) -> np.ndarray:
    """Fold index per row; a subject's rows share one fold (assigned by a stable hash order)."""
    uniq = sorted(set(subjects), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    fold_of = {s: i % k for i, s in enumerate(uniq)}
    return np.array([fold_of[s] for s in subjects])


def read_manifest(data: Path) -> pl.DataFrame:
    """The set's manifest with expressions normalised and rows without one dropped."""
    man = pl.read_csv(data / "manifest.csv")
    man = man.with_columns(pl.col("expression").map_elements(normalise_expression, return_dtype=pl.String))
    return man.filter(pl.col("expression").is_not_null())


def cross_validate(man: pl.DataFrame, fer: np.ndarray, bs: np.ndarray, aus: list[int], folds: int
                   ) -> tuple[dict[tuple[str, int], np.ndarray], dict[tuple[str, int], np.ndarray]]:
    """Subject-wise K-fold held-out predictions: ``(decisions, probabilities)``.

    ``decisions[(method, au)]`` (bool per row) for the calibrated models (``known``, ``blind``)
    and their bare baselines: ``prior`` (P(AU | known expression) >= 0.5, no image) and
    ``blind_prior`` (sum_e P(e | image) P(AU | e) >= 0.5: the expression model and the knowledge,
    no blendshapes); P(AU | expression) is re-estimated from the training subjects of each fold.
    ``probabilities[(mode, au)]`` for the calibrated models.
    """
    expressions = man["expression"].to_list()
    subjects = man["subject_id"].cast(pl.String).to_list() if "subject_id" in man.columns else [str(i) for i in range(man.height)]
    fold = subject_folds(subjects, folds)
    cv = {(m, a): np.zeros(man.height, dtype=bool) for m in ("known", "blind", "prior", "blind_prior") for a in aus}
    cvp = {(m, a): np.zeros(man.height) for m in ("known", "blind", "blind_prior") for a in aus}
    for f in range(folds):
        tr, te = fold != f, fold == f
        ea = estimate_expression_au(man.filter(pl.Series(tr)))
        for a in aus:
            y = man[au_column(a)].to_numpy().astype(int)
            pr = priors(ea, expressions, fer, a)
            for mode in ("known", "blind"):
                mdl = fit_au(a, mode, bs[tr], {k: v[tr] for k, v in pr.items()}, y[tr])
                p = predict(mdl, a, mode, bs[te], {k: v[te] for k, v in pr.items()})
                cvp[(mode, a)][te] = p
                cv[(mode, a)][te] = p >= mdl["threshold"]
            cv[("prior", a)][te] = pr["known"][te] >= 0.5
            cv[("blind_prior", a)][te] = pr["blind"][te] >= 0.5
            cvp[("blind_prior", a)][te] = pr["blind"][te]
    return cv, cvp


def calibrate(data: Path, folds: int = 5, cache: Path | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (the knowledge table to ship, the per-AU cross-validated report)."""
    man = read_manifest(data)
    aus = [a for a in AU_CATALOGUE if au_column(a) in man.columns]
    feats = extract_features(data, man, cache)
    fer, bs = feats["fer"], feats["bs"]
    expressions = man["expression"].to_list()
    cv, cvp = cross_validate(man, fer, bs, aus, folds)
    rows, report = [], []
    ea_all = estimate_expression_au(man)
    for a in aus:
        y = man[au_column(a)].to_numpy().astype(int)
        pr = priors(ea_all, expressions, fer, a)
        figs = {m: f1(cv[(m, a)], y) for m in ("known", "blind", "prior", "blind_prior")}
        report.append({"au": a, "au_name": AU_NAMES[a], "n_pos": int(y.sum()), "prevalence": float(y.mean()), "f1_known": figs["known"],
                       "f1_blind": figs["blind"], "f1_prior_only": figs["prior"],
                       "f1_blind_prior_only": figs["blind_prior"],
                       "auc_known": auc(cvp[("known", a)], y), "auc_blind": auc(cvp[("blind", a)], y),
                       "auc_blind_prior_only": auc(cvp[("blind_prior", a)], y)})
        for mode in ("known", "blind"):
            mdl = fit_au(a, mode, bs, pr, y)
            rows.append({"version": TABLE_VERSION, "au": a, "au_name": AU_NAMES[a], "mode": mode,
                         "groups": ";".join(mdl["groups"]), "coefs": ";".join(f"{c:.6f}" for c in mdl["coefs"]),
                         "intercept": round(mdl["intercept"], 6), "prior_coef": round(mdl["prior_coef"], 6),
                         "expr_coef": round(mdl["expr_coef"], 6),
                         "threshold": round(mdl["threshold"], 4), "n": int(len(y)), "n_pos": int(y.sum()),
                         "cv_f1": round(figs[mode], 4), "cv_f1_prior_only": round(figs["prior"], 4),
                         "cv_auc": round(auc(cvp[(mode, a)], y), 4), "cv_folds": folds,
                         "fitted_on": f"{data.name} ({man.height} rows, subject-wise CV)",
                         "fitted_date": date.today().isoformat(), "models": MODEL_VERSION})
    # AUs the source does not code keep a knowledge-only model (identity on the prior's log-odds)
    for a in AU_CATALOGUE:
        if a not in aus:
            for mode in ("known", "blind"):
                rows.append({"version": TABLE_VERSION, "au": a, "au_name": AU_NAMES[a], "mode": mode, "groups": "",
                             "coefs": "", "intercept": 0.0, "prior_coef": 1.0 if mode == "known" else 0.0,
                             "expr_coef": 0.0 if mode == "known" else 1.0, "threshold": 0.5, "n": 0, "n_pos": 0,
                             "cv_f1": None, "cv_f1_prior_only": None, "cv_auc": None, "cv_folds": folds,
                             "fitted_on": "not coded in source: knowledge prior only", "fitted_date": date.today().isoformat(),
                             "models": MODEL_VERSION})
    return pl.DataFrame(rows).sort("au", "mode"), pl.DataFrame(report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/ckplus"))
    ap.add_argument("--out", type=Path, default=table_path(DEFAULT_TABLE))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=None, help="directory to cache model features")
    args = ap.parse_args(argv)
    if not (args.data / "manifest.csv").exists():
        print(f"no manifest.csv in {args.data}", file=sys.stderr)
        return 2
    table, report = calibrate(args.data, args.folds, args.cache)
    with pl.Config(tbl_rows=40, tbl_cols=12, float_precision=3):
        print(report)
    for label, sub in (("AUs with positives", report.filter(pl.col("n_pos") > 0)),
                       (f"AUs with prevalence >= {EVAL_MIN_PREVALENCE:.0%}",
                        report.filter(pl.col("prevalence") >= EVAL_MIN_PREVALENCE))):
        print(f"subject-wise {args.folds}-fold CV mean F1 over {sub.height} {label}: known={sub['f1_known'].mean():.4f} "
              f"blind={sub['f1_blind'].mean():.4f} prior_only={sub['f1_prior_only'].mean():.4f} "
              f"blind_prior_only={sub['f1_blind_prior_only'].mean():.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write_csv(args.out)
    print(f"wrote {args.out} ({table.height} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
