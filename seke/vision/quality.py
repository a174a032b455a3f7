"""Quality of the offline annotator on a labelled face set (../shared/data manifest format).

Plain functions shared by ``bench/annotator_quality.py`` and an evaluation asset: each returns
figures for what the set's labels allow (expression accuracy / macro-F1 / ECE beside the bare
model, AU F1 known / blind / knowledge-prior-only, valence sign agreement), each beside the
class-prior baseline of the same faces (``expr_acc_majority``: the share of the commonest gold
expression; ``au_f1_all_present``: F1 of calling every AU present; ``valence_sign_majority``: the
share of the commoner polarity), which any model must beat.
Every figure comes from :mod:`seke.metrics` (macro-F1 over the taxonomy classes in gold ∪
predictions, ECE with 15 bins), the same code FEAB evaluation and training use. Mean AU F1 is
over AUs with prevalence >= EVAL_MIN_PREVALENCE in the set (a fixed AU list, the same for every
method); the mean over all AUs with positives is reported too (``*_all``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from seke import metrics
from seke.bench_data import DEFAULT_SPLIT, resolve_split, select_split
from seke.annotation import FaceItem, Labels, PromptSpec, SampleRequest
from seke.annotators.offline import OfflineAnnotator, decode_crop
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS, au_column, normalise_expression
from seke.vision.calibrate_au import EVAL_MIN_PREVALENCE
from seke.vision.expression import expression_probs

BATCH = 32


def load_set(d: Path, limit: int | None, split: str | None = DEFAULT_SPLIT) -> pl.DataFrame:
    """The set's rows of ``split`` (:func:`seke.bench_data.select_split`: a set without split
    labels is used whole, ``auto`` picks a dev or held-out split, a set with split labels but
    none of the picked split raises NoData)."""
    man = pl.read_csv(d / "manifest.csv", infer_schema_length=10000)
    if "split" in man.columns:
        splits = man["split"].cast(pl.String).to_list()
        idx = select_split(range(man.height), lambda i: splits[i], split, d.name)
        man = man[idx]
        used = resolve_split(splits, split)
        if used:
            man = man.with_columns(pl.lit(used).alias("_split_used"))
    if "expression" in man.columns:
        man = man.with_columns(pl.col("expression").map_elements(normalise_expression, return_dtype=pl.String))
    if limit and man.height > limit:
        man = man.sample(limit, seed=0, shuffle=True)
    return man


def run_annotator(ann: OfflineAnnotator, items: list[FaceItem], k: int) -> list[list]:
    spec = PromptSpec.make("bench", [], ["expression", "va", "aus"])
    out = []
    for i in range(0, len(items), BATCH):
        out += ann.sample_batch([SampleRequest(f, spec, k) for f in items[i:i + BATCH]])
    return out


def mean_probs(samples) -> dict[str, float] | None:
    ok = [s for s in samples if s.ok and s.expression_probs]
    if not ok:
        return None
    return {e: float(np.mean([s.expression_probs[e] for s in ok])) for e in EXPRESSIONS}


def mean_aus(samples) -> dict[int, float] | None:
    ok = [s for s in samples if s.ok and s.labels.aus is not None]
    if not ok:
        return None
    return {a: float(np.mean([s.labels.aus[a] for s in ok])) for a in AU_CATALOGUE}


def evaluate_set(name: str, d: Path, ann: OfflineAnnotator, knowledge, k: int, limit: int | None,
                 verbose: bool = True, split: str | None = DEFAULT_SPLIT) -> dict:
    man = load_set(d, limit, split)
    res: dict = {"set": name, "n": man.height,
                 "split": man["_split_used"][0] if "_split_used" in man.columns and man.height else None}
    blobs = [(d / p).read_bytes() for p in man["image"]]
    ids = [f"{name}:{p}" for p in man["image"]]
    t0 = time.perf_counter()
    blind = run_annotator(ann, [FaceItem(i, b, source=name) for i, b in zip(ids, blobs)], k)
    res["seconds_blind"] = time.perf_counter() - t0
    failed = sum(1 for ss in blind if not any(s.ok for s in ss))
    res["failed"] = failed
    if failed:
        errs = {s.error for ss in blind for s in ss if not s.ok}
        res["errors"] = sorted(errs)[:3]
        if verbose:
            print(f"  {name}: {failed} faces failed: {res['errors']}")
    has_expr = "expression" in man.columns
    gold = man["expression"].to_list() if has_expr else []
    if has_expr:
        probs = [mean_probs(ss) for ss in blind]
        pred = [max(p, key=p.get) if p else "neutral" for p in probs]
        conf = np.array([max(p.values()) if p else 0.0 for p in probs])
        ok = [g is not None for g in gold]
        g2 = [g for g, o in zip(gold, ok) if o]
        p2 = [p for p, o in zip(pred, ok) if o]
        res["expr_acc"] = metrics.accuracy(g2, p2)
        res["expr_n"] = len(g2)
        res["expr_acc_majority"] = max(g2.count(c) for c in set(g2)) / len(g2) if g2 else float("nan")
        res["expr_macro_f1"] = metrics.macro_f1(g2, p2, EXPRESSIONS)
        res["ece"] = metrics.ece(conf[np.array(ok)], [a == b for a, b in zip(p2, g2)])
        # baseline: bare model on the whole image, identity view, no mirror averaging
        base = []
        for b in blobs:
            try:
                p = expression_probs(decode_crop(b))
                base.append(max(p, key=p.get))
            except ValueError:
                base.append("neutral")
        b2 = [p for p, o in zip(base, ok) if o]
        res["expr_acc_bare"] = metrics.accuracy(g2, b2)
    au_cols = [a for a in AU_CATALOGUE if au_column(a) in man.columns and man[au_column(a)].sum() > 0]
    if au_cols and has_expr:
        known = run_annotator(ann, [FaceItem(i, b, known=Labels(expression=g), source=name)
                                    for i, b, g in zip(ids, blobs, gold)], k)
        rows = []
        for a in au_cols:
            y = man[au_column(a)].to_numpy().astype(int)
            fk = metrics.binary_f1([(mean_aus(ss) or {}).get(a, 0.0) >= 0.5 for ss in known], y)
            fb = metrics.binary_f1([(mean_aus(ss) or {}).get(a, 0.0) >= 0.5 for ss in blind], y)
            fp = metrics.binary_f1([knowledge.expression_au[g][a] >= 0.5 for g in gold], y)
            fa = metrics.binary_f1([True] * len(y), y)
            rows.append({"au": a, "prevalence": float(y.mean()), "f1_known": fk, "f1_blind": fb, "f1_prior_only": fp,
                         "f1_all_present": fa})
        tab = pl.DataFrame(rows)
        res["au_table"] = tab
        if verbose:
            with pl.Config(tbl_rows=40, float_precision=3):
                print(tab)
        ev = tab.filter(pl.col("prevalence") >= EVAL_MIN_PREVALENCE)
        for key, col in (("au_f1_known", "f1_known"), ("au_f1_blind", "f1_blind"), ("au_f1_prior_only", "f1_prior_only"),
                         ("au_f1_all_present", "f1_all_present")):
            res[key] = float(ev[col].mean())
            res[key + "_all"] = float(tab[col].mean())
        res["au_eval_aus"] = ev["au"].to_list()
    if "valence_polarity" in man.columns:
        pol = man["valence_polarity"].to_list()
        vals = [np.mean([s.labels.valence for s in ss if s.ok]) if any(s.ok for s in ss) else 0.0 for ss in blind]
        pairs = [(v, p) for v, p in zip(vals, pol) if p in ("positive", "negative")]
        res["valence_sign_acc"] = metrics.accuracy([p == "positive" for _, p in pairs], [v > 0 for v, _ in pairs])
        n_pos = sum(p == "positive" for _, p in pairs)
        res["valence_sign_majority"] = max(n_pos, len(pairs) - n_pos) / len(pairs) if pairs else float("nan")
        res["valence_n"] = len(pairs)
    return res
