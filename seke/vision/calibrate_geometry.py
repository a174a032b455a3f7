"""Fit the geometry expression classifier on FER2013 train, report it on FER2013 validation.

    python -m seke.vision.calibrate_geometry --data ../shared/data/fer2013 [--cache DIR]

Writes ``seke/knowledge_data/expression_geometry_v1.csv`` (see :mod:`seke.vision.expression_geometry`).
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

from seke.vision.calibrate_expression import TAX_TO_FER, split
from seke.vision.expression_geometry import DEFAULT_TABLE, fit
from seke.vision.au_evidence import table_path
from seke.vision.runtime import MODEL_VERSION


def geometry_features(data: Path, manifest: pl.DataFrame, cache: Path | None) -> dict[str, np.ndarray]:
    from seke.vision.features import view_evidence

    key = hashlib.sha256(("|".join(manifest["image"].to_list()) + MODEL_VERSION + "geom1").encode()).hexdigest()[:16]
    f = cache / f"geometry-{key}.npz" if cache is not None else None
    if f is not None and f.exists():
        d = np.load(f)
        return {k: d[k] for k in d.files}
    geo, bs, fer, al = [], [], [], []
    for rel in manifest["image"]:
        ev = view_evidence(Image.open(data / rel))
        geo.append(ev.geometry), bs.append(ev.blendshapes), fer.append(ev.fer_probs), al.append(ev.fer_aligned)
    out = {"geometry": np.array(geo), "bs": np.array(bs), "fer": np.array(fer), "fer_aligned": np.array(al)}
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, **out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/fer2013"))
    ap.add_argument("--out", type=Path, default=table_path(DEFAULT_TABLE))
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--c", type=float, default=0.05)
    args = ap.parse_args(argv)
    man = pl.read_csv(args.data / "manifest.csv")
    if "split" not in man.columns:
        print("manifest has no split column (need train and validation)", file=sys.stderr)
        return 2
    tr, va = split(man, "train", None), split(man, "validation", None)
    ftr, fva = geometry_features(args.data, tr, args.cache), geometry_features(args.data, va, args.cache)
    ytr = np.array([TAX_TO_FER[e] for e in tr["expression"]])
    yva = np.array([TAX_TO_FER[e] for e in va["expression"]])
    model = fit(ftr["geometry"], ftr["bs"], ytr, args.c)
    acc = float((model.probs(fva["geometry"], fva["bs"]).argmax(1) == yva).mean())
    print(f"train rows {len(ytr)}; validation accuracy: geometry {acc:.4f}, fer model {(fva['fer'].argmax(1) == yva).mean():.4f}")
    model.to_table(fitted_on=f"{args.data.name} train ({len(ytr)} rows)", validation_acc=round(acc, 4),
                   fitted_date=date.today().isoformat(), models=MODEL_VERSION).write_csv(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
