"""Score the shipped FER2013 tables on the validation split; fit nothing, write nothing.

    python -m seke.vision.evaluate_tables --data ../shared/data/fer2013 [--cache DIR]

* the expression fusion layer (``expression_fusion_v2.csv``, :mod:`seke.vision.expression_fusion`)
  against the bare fer model it re-weights: both accuracies, the faces only one of them gets
  right, and the exact one-sided sign (McNemar) test on those;
* the geometry verifier (``expression_geometry_v1.csv``, :mod:`seke.vision.expression_geometry`):
  its accuracy and how often it is wrong where the fer model is right or wrong.

Both tables were fitted on FER2013 *train* (``calibrate_expression`` / ``calibrate_geometry``),
so validation figures are held out. ``tests/seke/test_shipped_tables.py`` runs the same function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

from seke.vision.calibrate_expression import TAX_TO_FER, split
from seke.vision.calibrate_geometry import geometry_features


def evaluate_shipped(data: Path, cache: Path | None = None, limit: int | None = None) -> dict[str, float]:
    """The shipped fusion and geometry tables on ``data``'s validation split.

    ``fused_only``/``bare_only``: faces only the fused layer / only the bare fer model gets
    right; ``sign_test_p``: P(at least ``fused_only`` of those discordant faces go to the fused
    layer if both were equally good), the exact one-sided McNemar test.
    """
    from scipy.stats import binom

    from seke.vision.expression_fusion import load as load_fusion
    from seke.vision.expression_geometry import load as load_geometry

    va = split(pl.read_csv(data / "manifest.csv"), "validation", limit)
    f = geometry_features(data, va, cache)
    y = np.array([TAX_TO_FER[e] for e in va["expression"]])
    fusion, geometry = load_fusion(), load_geometry()
    if fusion is None or geometry is None:
        raise FileNotFoundError("shipped fusion/geometry table missing from seke/knowledge_data")
    bare = f["fer"].argmax(1) == y
    fused = fusion.probs(f["fer"], f["bs"]).argmax(1) == y
    geo = geometry.probs(f["geometry"], f["bs"]).argmax(1) == y
    b, c = int((fused & ~bare).sum()), int((bare & ~fused).sum())
    return {"n": len(y), "bare_acc": float(bare.mean()), "fused_acc": float(fused.mean()),
            "fused_only": b, "bare_only": c, "sign_test_p": float(binom.sf(b - 1, b + c, 0.5)) if b + c else 1.0,
            "geometry_acc": float(geo.mean()),
            "geometry_wrong_where_fer_right": float((~geo[bare]).mean()),
            "geometry_wrong_where_fer_wrong": float((~geo[~bare]).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    ap.add_argument("--cache", type=Path, default=None, help="directory to cache model features")
    args = ap.parse_args(argv)
    if not (args.data / "manifest.csv").exists():
        print(f"no manifest.csv in {args.data}", file=sys.stderr)
        return 2
    man = pl.read_csv(args.data / "manifest.csv")
    if "split" not in man.columns or "validation" not in set(man["split"].to_list()):
        print(f"{args.data}/manifest.csv has no validation split", file=sys.stderr)
        return 2
    r = evaluate_shipped(args.data, args.cache)
    print(f"{args.data.name} validation, {r['n']} faces: fer model (mirror-averaged) {r['bare_acc']:.4f}, "
          f"fused with blendshapes {r['fused_acc']:.4f} (right only when fused {r['fused_only']}, only bare "
          f"{r['bare_only']}; one-sided sign test p={r['sign_test_p']:.3f}); geometry verifier "
          f"{r['geometry_acc']:.4f}, wrong on {r['geometry_wrong_where_fer_right']:.1%} of the faces the fer model "
          f"gets right and on {r['geometry_wrong_where_fer_wrong']:.1%} of those it gets wrong")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
