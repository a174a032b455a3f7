"""Quality of the offline annotator on labelled face sets (../shared/data manifest format).

    python bench/annotator_quality.py [--data DIR ...] [--split S] [--samples K] [--limit N]

Defaults to the dev splits: ckplus (all), fer2013 (``--split``), wild. Each ``--data`` is one set
(a folder with ``manifest.csv``) or a folder of such sets. A set with a split column is cut to
``--split``: ``auto`` (default) takes ``validation`` where the set has it, else its splits other
than ``train`` (a held-out copy's test splits); ``all`` keeps every row; a set without any row of
a named split is an error. Asked for data it cannot find (a ``--data`` folder without a manifest
in it or directly under it, or none of the default sets), it exits 2 instead of measuring nothing. For each set
it measures what the labels allow:

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
subject-wise cross-validated ones). Ends with one RESULT line carrying ``source=offline``,
``data=`` (sets and face counts) and the baselines beside each figure (``expr_acc_bare``: the
bare expression model; ``expr_acc_class_prior``: always the commonest expression of the same
faces; ``au_f1_prior_only``: the knowledge-only prior; ``au_f1_all_present``: every AU called
present). Metrics come from
:mod:`seke.metrics`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke.annotators.offline import build_offline_annotator  # noqa: E402
from seke.bench_data import (DEFAULT_SPLIT, SPLIT_HELP, NoData, add_checkpoint_arguments, data_field,  # noqa: E402
                             labelled_sets, split_option)
from seke.knowledge import knowledge_v1, knowledge_with_estimate  # noqa: E402
from seke.vision.au_evidence import with_au_calibration  # noqa: E402
from seke.vision.calibrate_au import EVAL_MIN_PREVALENCE  # noqa: E402
from seke.vision.quality import evaluate_set, load_set  # noqa: E402

SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))
#: The dev sets measured without ``--data``, and first (in this order) in a folder of sets.
DEV_SETS = ("ckplus", "fer2013", "wild")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append",
                    help="a set folder (manifest.csv inside) or a folder of sets; repeatable; default: the dev sets")
    ap.add_argument("--samples", type=int, default=1, help="TTA samples per face (default 1)")
    ap.add_argument("--limit", type=int, default=None, help="at most N faces per set (random, seed 0)")
    ap.add_argument("--seed", type=int, default=0)
    add_checkpoint_arguments(ap)
    ap.add_argument("--split", default=DEFAULT_SPLIT, type=split_option, help=SPLIT_HELP)
    args = ap.parse_args(argv)
    split = args.split
    if args.data:  # each --data is one set or a folder of sets
        try:
            sets = [pair for d in args.data for pair in labelled_sets(d, DEV_SETS)]
        except NoData as exc:
            print(f"no data: {exc}", file=sys.stderr)
            return 2
    else:
        sets = [(s, SHARED / s) for s in DEV_SETS]
        for s, d in sets:
            if not (d / "manifest.csv").exists():
                print(f"  {s}: not found under {SHARED}, not measured")
        sets = [(s, d) for s, d in sets if (d / "manifest.csv").exists()]
    if not sets:
        print(f"no data: none of the sets has a manifest.csv (looked under {SHARED})", file=sys.stderr)
        return 2
    try:  # fail fast, before loading any model: every set must have rows of the asked split
        for _, d in sets:
            load_set(d, 1, split)
    except NoData as exc:
        print(f"no data: {exc}", file=sys.stderr)
        return 2
    ck = SHARED / "ckplus" / "manifest.csv"
    knowledge = knowledge_with_estimate(pl.read_csv(ck), "ckplus") if ck.exists() else knowledge_v1()
    knowledge = with_au_calibration(knowledge)
    ann = build_offline_annotator(knowledge, args.seed, args.expression_checkpoint,
                                  args.expression_checkpoint_weights)
    print(f"annotator: {ann.model}\nsamples per face: {args.samples}")
    results = []
    for name, d in sets:
        t = time.perf_counter()
        try:
            r = evaluate_set(name, d, ann, knowledge, args.samples, args.limit, split=split)
        except NoData as exc:
            print(f"no data: {exc}", file=sys.stderr)
            return 2
        print(f"  {name}: {r['n']} faces in {time.perf_counter() - t:.1f}s")
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
    kv = [f"source={ann.source}", "data=" + data_field({r["set"]: r["n"] for r in results},
                                                 {r["set"]: r.get("split") for r in results})]
    if au_src:
        kv += [f"au_set={au_src['set']}", f"au_f1_known={au_src['au_f1_known']:.4f}", f"au_f1_prior_only={au_src['au_f1_prior_only']:.4f}",
               f"au_f1_blind={au_src['au_f1_blind']:.4f}", f"au_f1_all_present={au_src['au_f1_all_present']:.4f}"]
    if expr_src:
        kv += [f"expr_set={expr_src['set']}", f"expr_acc={expr_src['expr_acc']:.4f}",
               f"expr_acc_bare={expr_src['expr_acc_bare']:.4f}", f"expr_acc_class_prior={expr_src['expr_acc_majority']:.4f}",
               f"expr_macro_f1={expr_src['expr_macro_f1']:.4f}"]
    if va_src:
        kv += [f"valence_sign_acc={va_src['valence_sign_acc']:.4f}",
               f"valence_sign_class_prior={va_src['valence_sign_majority']:.4f}"]
    if expr_src:
        kv.append(f"ece={expr_src['ece']:.4f}")
    print("RESULT " + " ".join(kv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
