"""Quality of the offline annotator on labelled face sets (../shared/data manifest format).

    python bench/annotator_quality.py [--data DIR ...] [--samples K] [--limit N]

Defaults to the dev splits: ckplus (all), fer2013 (split=validation), wild. For each set it
measures what the labels allow:

* expression accuracy / macro-F1 (blind annotator, K TTA samples, mean probabilities) beside the
  bare expression model on the whole image (baseline, same run), and ECE (15 bins) of the
  confidence;
* AU per-AU and mean F1 (sets with ``au<N>`` columns) with the expression given as knowledge,
  blind, and the knowledge-only prior (AU present iff P(AU | expression) >= 0.5, no image);
  mean F1 is over AUs with prevalence >= 5% in the set (same AUs for every method; the mean over
  all AUs with positives is printed too);
* valence sign agreement (sets with ``valence_polarity``), blind.

The knowledge is P(AU | expression) estimated from ../shared/data/ckplus when present (the dev
set, so AU figures on ckplus are dev figures; ``python -m seke.vision.calibrate_au`` prints the
subject-wise cross-validated ones). Ends with one RESULT line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke.annotation import FaceItem, Labels, PromptSpec, SampleRequest  # noqa: E402
from seke.annotators.offline import OfflineAnnotator, decode_crop  # noqa: E402
from seke.knowledge import knowledge_v1, knowledge_with_estimate  # noqa: E402
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS, au_column, normalise_expression  # noqa: E402
from seke.vision.au_evidence import f1, with_au_calibration  # noqa: E402
from seke.vision.calibrate_au import EVAL_MIN_PREVALENCE  # noqa: E402
from seke.vision.expression import expression_probs  # noqa: E402

SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))
BATCH = 32


def load_set(d: Path, limit: int | None) -> pl.DataFrame:
    man = pl.read_csv(d / "manifest.csv", infer_schema_length=10000)
    if "split" in man.columns and (man["split"] == "validation").any():
        man = man.filter(pl.col("split") == "validation")
    if "expression" in man.columns:
        man = man.with_columns(pl.col("expression").map_elements(normalise_expression, return_dtype=pl.String))
    if limit and man.height > limit:
        man = man.sample(limit, seed=0, shuffle=True)
    return man


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    edges = np.linspace(0, 1, bins + 1)
    tot = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            tot += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(tot)


def macro_f1(pred: list[str], gold: list[str]) -> float:
    p, g = np.array(pred), np.array(gold)
    return float(np.mean([f1(p == c, (g == c).astype(int)) for c in sorted(set(gold))]))


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


def evaluate_set(name: str, d: Path, ann: OfflineAnnotator, knowledge, k: int, limit: int | None) -> dict:
    man = load_set(d, limit)
    res: dict = {"set": name, "n": man.height}
    blobs = [(d / p).read_bytes() for p in man["image"]]
    ids = [f"{name}:{p}" for p in man["image"]]
    t0 = time.perf_counter()
    blind = run_annotator(ann, [FaceItem(i, b, source=name) for i, b in zip(ids, blobs)], k)
    res["seconds_blind"] = time.perf_counter() - t0
    failed = sum(1 for ss in blind if not any(s.ok for s in ss))
    res["failed"] = failed
    if failed:
        errs = {s.error for ss in blind for s in ss if not s.ok}
        print(f"  {name}: {failed} faces failed: {sorted(errs)[:3]}")
    has_expr = "expression" in man.columns
    gold = man["expression"].to_list() if has_expr else []
    if has_expr:
        probs = [mean_probs(ss) for ss in blind]
        pred = [max(p, key=p.get) if p else "neutral" for p in probs]
        conf = np.array([max(p.values()) if p else 0.0 for p in probs])
        ok = [g is not None for g in gold]
        g2 = [g for g, o in zip(gold, ok) if o]
        p2 = [p for p, o in zip(pred, ok) if o]
        res["expr_acc"] = float(np.mean([a == b for a, b in zip(p2, g2)]))
        res["expr_macro_f1"] = macro_f1(p2, g2)
        res["ece"] = ece(conf[np.array(ok)], np.array([a == b for a, b in zip(p2, g2)], dtype=float))
        # baseline: bare model on the whole image, identity view, no mirror averaging
        base = []
        for b in blobs:
            try:
                p = expression_probs(decode_crop(b))
                base.append(max(p, key=p.get))
            except ValueError:
                base.append("neutral")
        b2 = [p for p, o in zip(base, ok) if o]
        res["expr_acc_bare"] = float(np.mean([a == b for a, b in zip(b2, g2)]))
    au_cols = [a for a in AU_CATALOGUE if au_column(a) in man.columns and man[au_column(a)].sum() > 0]
    if au_cols and has_expr:
        known = run_annotator(ann, [FaceItem(i, b, known=Labels(expression=g), source=name)
                                    for i, b, g in zip(ids, blobs, gold)], k)
        rows = []
        for a in au_cols:
            y = man[au_column(a)].to_numpy().astype(int)
            fk = f1(np.array([(mean_aus(ss) or {}).get(a, 0.0) >= 0.5 for ss in known]), y)
            fb = f1(np.array([(mean_aus(ss) or {}).get(a, 0.0) >= 0.5 for ss in blind]), y)
            fp = f1(np.array([knowledge.expression_au[g][a] >= 0.5 for g in gold]), y)
            rows.append({"au": a, "prevalence": float(y.mean()), "f1_known": fk, "f1_blind": fb, "f1_prior_only": fp})
        tab = pl.DataFrame(rows)
        with pl.Config(tbl_rows=40, float_precision=3):
            print(tab)
        ev = tab.filter(pl.col("prevalence") >= EVAL_MIN_PREVALENCE)
        for key, col in (("au_f1_known", "f1_known"), ("au_f1_blind", "f1_blind"), ("au_f1_prior_only", "f1_prior_only")):
            res[key] = float(ev[col].mean())
            res[key + "_all"] = float(tab[col].mean())
        res["au_eval_aus"] = ev["au"].to_list()
    if "valence_polarity" in man.columns:
        pol = man["valence_polarity"].to_list()
        vals = [np.mean([s.labels.valence for s in ss if s.ok]) if any(s.ok for s in ss) else 0.0 for ss in blind]
        pairs = [(v, p) for v, p in zip(vals, pol) if p in ("positive", "negative")]
        res["valence_sign_acc"] = float(np.mean([(v > 0) == (p == "positive") for v, p in pairs]))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", help="set folder(s); default: the dev splits")
    ap.add_argument("--samples", type=int, default=1, help="TTA samples per face (default 1)")
    ap.add_argument("--limit", type=int, default=None, help="at most N faces per set (random, seed 0)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sets = args.data or [SHARED / s for s in ("ckplus", "fer2013", "wild")]
    sets = [s for s in sets if (s / "manifest.csv").exists()]
    if not sets:
        print(f"no data: none of the sets has a manifest.csv (looked under {SHARED})", file=sys.stderr)
        return 2
    ck = SHARED / "ckplus" / "manifest.csv"
    knowledge = knowledge_with_estimate(pl.read_csv(ck), "ckplus") if ck.exists() else knowledge_v1()
    knowledge = with_au_calibration(knowledge)
    ann = OfflineAnnotator(knowledge, seed=args.seed)
    print(f"annotator: {ann.model}\nsamples per face: {args.samples}")
    results = []
    for d in sets:
        t = time.perf_counter()
        r = evaluate_set(d.name, d, ann, knowledge, args.samples, args.limit)
        print(f"  {d.name}: {r['n']} faces in {time.perf_counter() - t:.1f}s")
        results.append(r)
    print(f"\n{'set':10s} {'n':>6s} {'expr_acc':>9s} {'bare':>7s} {'ratio':>6s} {'macroF1':>8s} {'ECE':>6s} "
          f"{'AU known':>9s} {'AU blind':>9s} {'AU prior':>9s} {'ratio':>6s} {'V sign':>7s}")
    fmt = lambda r, k: f"{r[k]:.4f}" if k in r else "-"  # noqa: E731
    for r in results:
        ratio_e = f"{r['expr_acc'] / r['expr_acc_bare']:.3f}" if r.get("expr_acc_bare") else "-"
        ratio_a = f"{r['au_f1_known'] / r['au_f1_prior_only']:.3f}" if r.get("au_f1_prior_only") else "-"
        print(f"{r['set']:10s} {r['n']:6d} {fmt(r, 'expr_acc'):>9s} {fmt(r, 'expr_acc_bare'):>7s} {ratio_e:>6s} "
              f"{fmt(r, 'expr_macro_f1'):>8s} {fmt(r, 'ece'):>6s} {fmt(r, 'au_f1_known'):>9s} {fmt(r, 'au_f1_blind'):>9s} "
              f"{fmt(r, 'au_f1_prior_only'):>9s} {ratio_a:>6s} {fmt(r, 'valence_sign_acc'):>7s}")
    for r in results:
        if "au_f1_known_all" in r:
            print(f"{r['set']}: mean F1 over all AUs with positives: known={r['au_f1_known_all']:.4f} "
                  f"blind={r['au_f1_blind_all']:.4f} prior_only={r['au_f1_prior_only_all']:.4f}; "
                  f"prevalence>={EVAL_MIN_PREVALENCE:.0%} AUs: {r['au_eval_aus']}")
    # RESULT: expression figures from fer2013 (the split) when measured, else the first set
    by = {r["set"]: r for r in results}
    expr_src = by.get("fer2013") or next((r for r in results if "expr_acc" in r), None)
    au_src = by.get("ckplus") or next((r for r in results if "au_f1_known" in r), None)
    va_src = next((r for r in results if "valence_sign_acc" in r), None)
    kv = []
    if au_src:
        kv += [f"au_f1_known={au_src['au_f1_known']:.4f}", f"au_f1_prior_only={au_src['au_f1_prior_only']:.4f}",
               f"au_f1_blind={au_src['au_f1_blind']:.4f}"]
    if expr_src:
        kv += [f"expr_acc={expr_src['expr_acc']:.4f}", f"expr_macro_f1={expr_src['expr_macro_f1']:.4f}"]
    if va_src:
        kv.append(f"valence_sign_acc={va_src['valence_sign_acc']:.4f}")
    if expr_src:
        kv.append(f"ece={expr_src['ece']:.4f}")
    print("RESULT " + " ".join(kv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
