"""Fit the expression fusion layer on FER2013 train, report it on FER2013 validation.

    python -m seke.vision.calibrate_expression --data ../shared/data/fer2013 [--train-limit 8000]

Train and validation are FER2013's own disjoint splits; the printed validation accuracy is a
held-out figure. Writes ``seke/knowledge_data/expression_fusion_v2.csv``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from seke.taxonomy import normalise_expression
from seke.vision.au_evidence import table_path
from seke.vision.calibrate_au import extract_features
from seke.vision.expression import FER_CLASSES, FER_TO_TAXONOMY
from seke.vision.expression_fusion import DEFAULT_TABLE, fit
from seke.vision.runtime import MODEL_VERSION

TAX_TO_FER = {v: i for i, v in enumerate(FER_TO_TAXONOMY[c] for c in FER_CLASSES)}


def split(man: pl.DataFrame, name: str, limit: int | None) -> pl.DataFrame:
    s = man.filter(pl.col("split") == name)
    s = s.with_columns(pl.col("expression").map_elements(normalise_expression, return_dtype=pl.String))
    s = s.filter(pl.col("expression").is_in(list(TAX_TO_FER)))
    return s.sample(limit, seed=0, shuffle=True) if limit and s.height > limit else s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    ap.add_argument("--train-limit", type=int, default=8000)
    ap.add_argument("--out", type=Path, default=table_path(DEFAULT_TABLE))
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    man = pl.read_csv(args.data / "manifest.csv")
    if "split" not in man.columns:
        print("manifest has no split column (need train and validation)", file=sys.stderr)
        return 2
    tr, va = split(man, "train", args.train_limit), split(man, "validation", None)
    ftr, fva = extract_features(args.data, tr, args.cache), extract_features(args.data, va, args.cache)
    ytr = np.array([TAX_TO_FER[e] for e in tr["expression"]])
    yva = np.array([TAX_TO_FER[e] for e in va["expression"]])
    model = fit(ftr["fer"], ftr["bs"], ytr, l2=1e-2)
    acc = lambda p, y: float((np.argmax(p, 1) == y).mean())  # noqa: E731
    print(f"train rows {len(ytr)}, validation rows {len(yva)}")
    print(f"validation accuracy: fer model (mirror-averaged) {acc(fva['fer'], yva):.4f}   "
          f"fused with blendshapes {acc(model.probs(fva['fer'], fva['bs']), yva):.4f}")
    print(f"train accuracy:      fer model {acc(ftr['fer'], ytr):.4f}   fused {acc(model.probs(ftr['fer'], ftr['bs']), ytr):.4f}")
    table = model.to_table(fitted_on=f"{args.data.name} train ({len(ytr)} rows)",
                           validation_acc=round(acc(model.probs(fva["fer"], fva["bs"]), yva), 4),
                           validation_acc_bare=round(acc(fva["fer"], yva), 4),
                           fitted_date=date.today().isoformat(), models=MODEL_VERSION)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write_csv(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
