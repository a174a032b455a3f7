"""Calibrate the blendshape -> AU models on a FACS-coded set and write the knowledge table.

    python -m seke.vision.calibrate_au --data ../shared/data/ckplus [--out seke/knowledge_data/au_calibration_v2.csv]

Reads a manifest with ``expression``, ``subject_id`` and binary ``au<N>`` columns (CK+ format),
runs the offline models once per image (identity view), then:

1. **Subject-wise K-fold cross-validation** (no subject in both train and test): in each fold,
   P(AU | expression) is re-estimated from the training subjects only, each AU's logistic model
   (see :mod:`seke.vision.au_evidence`) and its F1-optimal threshold are fitted on the training
   subjects, and the held-out subjects are predicted. The printed per-AU F1 (known / blind, and
   the bare baselines they must beat: the knowledge prior alone with the expression known, and
   the blind prior sum_e P(e | image) P(AU | e) without blendshapes) are therefore honest
   held-out figures (``tests/seke/test_shipped_tables.py`` checks the gains on all of CK+).
2. **Keep a fitted model only where it beats the knowledge.** An AU's fitted model ships only
   if its held-out F1 is above its bare baseline's (known: the knowledge prior; blind: the
   blind prior); otherwise the table keeps the prior alone for that AU and mode (``kind``
   ``knowledge_prior``). On CK+ the fitted known-mode models lose to the knowledge for AUs such
   as 14 and 23, whose P(AU | expression) already decides them. The choice is part of the
   calibration, so the reported figures come from nested CV: inside each outer fold it is made
   from an inner subject-wise CV of the training subjects only (Varma & Simon 2006, "Bias in
   error estimation when using cross-validation for model selection").
3. A final fit on all rows gives the table that ships, with the CV figures in its columns.
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

TABLE_VERSION = "au_calibration_v2"
MIN_POSITIVES = 8
#: Mean F1 is summarised over AUs with at least this base rate (rarer AUs have too few positives
#: for a stable F1; the same set is used for every method, prior-only included).
EVAL_MIN_PREVALENCE = 0.05   # fewer training positives: image coefficients are not fitted (knowledge only)
L2 = 0.1


def extract_features(data: Path, manifest: pl.DataFrame, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Identity-view FER probabilities, blendshapes and landmark geometry for every manifest row
    (cached by content; ``geo`` is what :func:`seke.vision.features.geometry_features` gives,
    used by ``bench/au_features.py`` to compare richer AU models with the shipped ones)."""
    from seke.vision.features import view_evidence

    key = hashlib.sha256(("|".join(manifest["image"].to_list()) + MODEL_VERSION + str(data.resolve())).encode()).hexdigest()[:16]
    if cache is not None:
        f = cache / f"features-{key}.npz"
        if f.exists():
            d = np.load(f)
            if {"fer", "bs", "geo"} <= set(d.files):
                return {k: d[k] for k in d.files}
    fer, bs, geo = [], [], []
    for rel in manifest["image"]:
        ev = view_evidence(Image.open(data / rel), refine=False)
        fer.append(ev.fer_probs)
        bs.append(ev.blendshapes)
        geo.append(ev.geometry)
    out = {"fer": np.array(fer), "bs": np.array(bs), "geo": np.array(geo)}
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


def _held_out(man: pl.DataFrame, rows: np.ndarray, fer: np.ndarray, bs: np.ndarray, aus: list[int], folds: int
              ) -> dict[tuple[str, int], np.ndarray]:
    """Subject-wise K-fold held-out scores of the rows in ``rows`` (bool mask; other rows stay 0).

    Keys ``(method, au)``: ``known``/``blind`` the fitted models' decisions, ``known_p``/``blind_p``
    their probabilities, and their bare baselines ``prior`` (P(AU | known expression) >= 0.5, no
    image) and ``blind_prior`` (sum_e P(e | image) P(AU | e) >= 0.5: the expression model and the
    knowledge, no blendshapes), with ``blind_prior_p``. P(AU | expression) is re-estimated from
    the training subjects of each fold.
    """
    expressions = man["expression"].to_list()
    subjects = subjects_of(man)
    fold = np.full(man.height, -1)
    fold[rows] = subject_folds([s for s, r in zip(subjects, rows) if r], folds)
    out = {(m, a): np.zeros(man.height, dtype=bool if not m.endswith("_p") else float)
           for m in ("known", "blind", "prior", "blind_prior", "known_p", "blind_p", "blind_prior_p") for a in aus}
    for f in range(folds):
        tr, te = rows & (fold != f), fold == f
        ea = estimate_expression_au(man.filter(pl.Series(tr)))
        for a in aus:
            y = man[au_column(a)].to_numpy().astype(int)
            pr = priors(ea, expressions, fer, a)
            for mode in ("known", "blind"):
                mdl = fit_au(a, mode, bs[tr], {k: v[tr] for k, v in pr.items()}, y[tr])
                p = predict(mdl, a, mode, bs[te], {k: v[te] for k, v in pr.items()})
                out[(f"{mode}_p", a)][te] = p
                out[(mode, a)][te] = p >= mdl["threshold"]
            out[("prior", a)][te] = pr["known"][te] >= 0.5
            out[("blind_prior", a)][te] = pr["blind"][te] >= 0.5
            out[("blind_prior_p", a)][te] = pr["blind"][te]
    return out


#: The bare baseline each mode's fitted model must beat to be shipped.
BARE = {"known": "prior", "blind": "blind_prior"}


def fitted_beats_bare(fitted: np.ndarray, bare: np.ndarray, y: np.ndarray) -> bool:
    """Whether the fitted model's held-out decisions have a higher F1 than its bare baseline's
    (ties keep the baseline: the simpler model, with nothing fitted to overfit)."""
    return f1(fitted, y) > f1(bare, y)


def cross_validate(man: pl.DataFrame, fer: np.ndarray, bs: np.ndarray, aus: list[int], folds: int,
                   inner_folds: int = 4) -> tuple[dict[tuple[str, int], np.ndarray], dict[tuple[str, int], np.ndarray]]:
    """Subject-wise K-fold held-out predictions of the whole calibration: ``(decisions, probabilities)``.

    The calibration fits each AU's model and then keeps it only where it beats its bare
    baseline (:func:`fitted_beats_bare`, judged on held-out subjects), else ships the knowledge
    prior alone. So that the reported figure covers that choice too, it is made inside each
    outer fold from an inner subject-wise CV of the training subjects only (nested CV).

    ``decisions[(method, au)]`` (bool per row) for ``known`` and ``blind`` (the selected
    model), ``known_fitted`` and ``blind_fitted`` (always the fitted model) and the bare
    baselines ``prior`` and ``blind_prior`` (see :func:`_held_out`). ``probabilities[(mode, au)]``
    of the fitted models (``known``, ``blind``) and of ``blind_prior``.
    """
    everything = np.ones(man.height, dtype=bool)
    outer = _held_out(man, everything, fer, bs, aus, folds)
    fold = subject_folds(subjects_of(man), folds)
    cv = {(m, a): outer[(m, a)] for m in ("prior", "blind_prior") for a in aus}
    cv |= {(f"{m}_fitted", a): outer[(m, a)] for m in BARE for a in aus}
    cv |= {(m, a): np.zeros(man.height, dtype=bool) for m in BARE for a in aus}
    for f in range(folds):
        tr, te = fold != f, fold == f
        inner = _held_out(man, tr, fer, bs, aus, inner_folds)
        for a in aus:
            y = man[au_column(a)].to_numpy().astype(int)
            for mode, bare in BARE.items():
                keep = fitted_beats_bare(inner[(mode, a)][tr], inner[(bare, a)][tr], y[tr])
                cv[(mode, a)][te] = outer[(mode, a)][te] if keep else outer[(bare, a)][te]
    cvp = {(m, a): outer[(f"{m}_p", a)] for m in ("known", "blind", "blind_prior") for a in aus}
    return cv, cvp


def subjects_of(man: pl.DataFrame) -> list[str]:
    """Subject id per row (row numbers where the set has no ``subject_id``: every row its own subject)."""
    return man["subject_id"].cast(pl.String).to_list() if "subject_id" in man.columns else [str(i) for i in range(man.height)]


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
    stamp = {"cv_folds": folds, "fitted_date": date.today().isoformat(), "models": MODEL_VERSION}
    for a in aus:
        y = man[au_column(a)].to_numpy().astype(int)
        pr = priors(ea_all, expressions, fer, a)
        figs = {m: f1(cv[(m, a)], y) for m in ("known", "blind", "prior", "blind_prior", "known_fitted", "blind_fitted")}
        keep = {mode: fitted_beats_bare(cv[(f"{mode}_fitted", a)], cv[(bare, a)], y) for mode, bare in BARE.items()}
        report.append({"au": a, "au_name": AU_NAMES[a], "n_pos": int(y.sum()), "prevalence": float(y.mean()),
                       "f1_known": figs["known"], "f1_blind": figs["blind"], "f1_prior_only": figs["prior"],
                       "f1_blind_prior_only": figs["blind_prior"], "f1_known_fitted": figs["known_fitted"],
                       "f1_blind_fitted": figs["blind_fitted"],
                       "known_kind": KINDS[keep["known"]], "blind_kind": KINDS[keep["blind"]],
                       "auc_known": auc(cvp[("known", a)], y), "auc_blind": auc(cvp[("blind", a)], y),
                       "auc_blind_prior_only": auc(cvp[("blind_prior", a)], y)})
        cv_figs = {"n": int(len(y)), "n_pos": int(y.sum()), "cv_f1_prior_only": round(figs["prior"], 4)}
        for mode in BARE:
            cv_figs["cv_f1"] = round(figs[mode], 4)
            if not keep[mode]:
                rows.append(_knowledge_only_row(a, mode, **cv_figs, **stamp, cv_auc=None, fitted_on=(
                    f"{data.name} ({man.height} rows): the fitted model (CV F1 {figs[f'{mode}_fitted']:.4f}) did not "
                    f"beat the knowledge prior (CV F1 {figs[BARE[mode]]:.4f}), so the prior is kept")))
                continue
            mdl = fit_au(a, mode, bs, pr, y)
            rows.append({"version": TABLE_VERSION, "au": a, "au_name": AU_NAMES[a], "mode": mode, "kind": KINDS[True],
                         "groups": ";".join(mdl["groups"]), "coefs": ";".join(f"{c:.6f}" for c in mdl["coefs"]),
                         "intercept": round(mdl["intercept"], 6), "prior_coef": round(mdl["prior_coef"], 6),
                         "expr_coef": round(mdl["expr_coef"], 6), "threshold": round(mdl["threshold"], 4),
                         **cv_figs, "cv_auc": round(auc(cvp[(mode, a)], y), 4),
                         "fitted_on": f"{data.name} ({man.height} rows, subject-wise nested CV)", **stamp})
    rows += [_knowledge_only_row(a, mode, n=0, n_pos=0, cv_f1=None, cv_f1_prior_only=None, cv_auc=None, **stamp,
                                 fitted_on="not coded in source: knowledge prior only")
             for a in AU_CATALOGUE if a not in aus for mode in BARE]
    return pl.DataFrame(rows).select(TABLE_COLUMNS).sort("au", "mode"), pl.DataFrame(report)


TABLE_COLUMNS = ("version", "au", "au_name", "mode", "kind", "groups", "coefs", "intercept", "prior_coef", "expr_coef",
                 "threshold", "n", "n_pos", "cv_f1", "cv_f1_prior_only", "cv_auc", "cv_folds", "fitted_on",
                 "fitted_date", "models")
#: ``kind`` column of the table: a fitted model, or the knowledge prior kept because the fitted
#: model did not beat it on held-out subjects (or the source does not code the AU).
KINDS = {True: "fitted", False: "knowledge_prior"}


def _knowledge_only_row(au: int, mode: str, **figures) -> dict:
    """A table row that is the knowledge prior alone: the identity on the prior's log-odds
    (P(AU | expression) known, sum_e P(e | image) P(AU | e) blind) at threshold 0.5."""
    return {"version": TABLE_VERSION, "au": au, "au_name": AU_NAMES[au], "mode": mode, "kind": KINDS[False],
            "groups": "", "coefs": "", "intercept": 0.0, "prior_coef": 1.0 if mode == "known" else 0.0,
            "expr_coef": 0.0 if mode == "known" else 1.0, "threshold": 0.5, **figures}


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
              f"blind_prior_only={sub['f1_blind_prior_only'].mean():.4f} (always fitted: "
              f"known={sub['f1_known_fitted'].mean():.4f} blind={sub['f1_blind_fitted'].mean():.4f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write_csv(args.out)
    print(f"wrote {args.out} ({table.height} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
