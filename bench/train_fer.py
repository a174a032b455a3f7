"""Train the multi-task net on a packed FER2013 (or FEID) ``.npz`` and score fer2013 validation.

Runs on a bare GPU machine (needs torch + numpy + pyarrow only; no Dagster, no lake):

    PYTHONPATH=. python3 bench/train_fer.py --npz .data/fer2013_48.npz --time-limit 420 --out $OUT

Trains on ``split == train`` and evaluates on ``split == validation`` (accuracy of the
expression head, plain and with flip/shift test-time augmentation). ``--ablation`` trains on
human expression labels only. Asked for data it cannot find (no ``--npz``/``--data-dir``, a
folder without manifest or ``.npz``, no train or no validation face) it exits 2.

Last line: ``RESULT source=… data=… fer_val_acc=… fer_val_acc_notta=… class_prior_acc=… …``:
``source=`` the training labels (``human``: the set's own labels; ``feid``: a packed FEID, the
platform's labels; or what the npz's ``labels`` field says), ``data=`` the sets and face counts
trained and scored on, and ``class_prior_acc`` the baseline measured on the same validation
faces (always answering their commonest expression).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seke.train.config import TrainConfig, with_overrides  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", help="file from bench/pack_fer.py, or a folder holding one")
    ap.add_argument("--data-dir", help="a manifest folder instead of --npz (e.g. ../shared/data/fer2013)")
    ap.add_argument("--out", default=os.environ.get("OUT", "out/train_fer"))
    ap.add_argument("--recipe", default="full", choices=["full", "compact"],
                    help="full (ResNet-18-like, for a GPU) or compact (the CPU-sized net)")
    ap.add_argument("--epochs", type=int, default=0, help="0 = the recipe's")
    ap.add_argument("--time-limit", type=float, default=420.0, help="seconds of training (epochs are cut to fit)")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = the recipe's")
    ap.add_argument("--lr", type=float, default=0.0, help="0 = the recipe's")
    ap.add_argument("--optimizer", default=None, choices=["sgd", "adamw"], help="default: the recipe's")
    ap.add_argument("--weight-decay", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--warmup-epochs", type=float, default=-1.0, help="<0 = the recipe's")
    ap.add_argument("--limit", type=int, default=None, help="train on at most N faces (CPU smoke runs)")
    ap.add_argument("--val-limit", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="the unit-test network (CPU smoke runs)")
    ap.add_argument("--widths", default="", help="stage widths, e.g. 16,32,64,128 (default: recipe's 64..512)")
    ap.add_argument("--blocks", default="", help="residual blocks per stage, e.g. 1,1,1,1 (default: 2,2,2,2)")
    ap.add_argument("--no-zero-init", action="store_true",
                    help="residual branches start active, not at zero γ (short runs learn sooner)")
    ap.add_argument("--no-aug", action="store_true", help="no training augmentation (short CPU runs)")
    ap.add_argument("--ablation", action="store_true", help="human expression labels only")
    ap.add_argument("--fast", action="store_true", help="cuDNN autotuner instead of deterministic algorithms")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="any recipe field, e.g. --set aug_erase_p=0 (seke.train.config.TrainConfig); applied last")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from seke.bench_data import class_prior_rate
    from seke.train.arrays import from_manifest
    from seke.train.packing import load_npz
    from seke.train.run import headline, train_and_evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    meta: dict = {}
    if args.npz:
        path = Path(args.npz)
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                print(f"no data: no .npz in {path}", file=sys.stderr)
                return 2
            path = found[0]
        if not path.is_file():
            print(f"no data: {path} not found", file=sys.stderr)
            return 2
        arrays, meta = load_npz(path)
        train_set, val = arrays.where_split("train"), arrays.where_split("validation")
        train_name = meta.get("set") or ("feid" if meta.get("feid_lake") else "fer2013")
        labels = meta.get("labels") or ("feid" if meta.get("feid_lake") else "human")
    elif args.data_dir:
        if not (Path(args.data_dir) / "manifest.csv").is_file():
            print(f"no data: {args.data_dir}/manifest.csv not found", file=sys.stderr)
            return 2
        train_set, _ = from_manifest(args.data_dir, splits=["train"], limit=args.limit)
        val, _ = from_manifest(args.data_dir, splits=["validation"], limit=args.val_limit)
        train_name, labels = Path(args.data_dir).name, "human"
    else:
        print("no data: give --npz or --data-dir", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    if args.limit and len(train_set) > args.limit:
        train_set = train_set.subset(np.sort(rng.choice(len(train_set), args.limit, replace=False)))
    if args.val_limit and len(val) > args.val_limit:
        val = val.subset(np.sort(rng.choice(len(val), args.val_limit, replace=False)))
    print(f"data: {len(train_set)} train / {len(val)} validation faces, loaded in {time.perf_counter() - t0:.1f}s")
    if not len(train_set) or not len(val):
        print(f"no data: {len(train_set)} train and {len(val)} validation faces", file=sys.stderr)
        return 2
    val_name = "fer2013" if train_name == "feid" else train_name
    data = f"{train_name}[train]:{len(train_set)},{val_name}[validation]:{len(val)}"  # data_field's format
    # baseline on the same validation faces: always answering their commonest expression
    prior = class_prior_rate(val.expression[val.expression >= 0].tolist())

    if args.tiny:
        base, name = TrainConfig.tiny(image_size=48), "fer-tiny"
    elif args.recipe == "compact":
        base, name = TrainConfig.compact(), "fer-compact"
    else:
        base, name = TrainConfig(), "fer"
    cfg = replace(base, name=name, epochs=args.epochs or base.epochs,
                  batch_size=args.batch_size or base.batch_size, lr=args.lr or base.lr, seed=args.seed,
                  warmup_epochs=base.warmup_epochs if args.warmup_epochs < 0 else args.warmup_epochs,
                  optimizer=args.optimizer or base.optimizer,
                  weight_decay=base.weight_decay if args.weight_decay is None else args.weight_decay,
                  time_limit_s=args.time_limit, deterministic=not args.fast, tta=not args.no_tta)
    if args.widths:
        cfg = replace(cfg, widths=tuple(int(w) for w in args.widths.split(",")))
    if args.blocks:
        cfg = replace(cfg, blocks=tuple(int(b) for b in args.blocks.split(",")))
    if args.no_zero_init:
        cfg = replace(cfg, zero_init_residual=False)
    if args.no_aug:
        cfg = replace(cfg, aug_rotate_deg=0.0, aug_scale=(1.0, 1.0), aug_translate=0.0, aug_flip=False,
                      aug_brightness=0.0, aug_contrast=0.0, aug_erase_p=0.0)
    if args.ablation:
        cfg = cfg.ablation()
    try:
        cfg = with_overrides(cfg, args.set)
    except ValueError as exc:
        print(f"refused: --set {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = train_and_evaluate(train_set, cfg, device=args.device, evals={"fer2013_validation": val},
                                 data_version=str(meta.get("data_version", "")),
                                 partitions=meta.get("partitions", ["fer2013"]), checkpoint_root=str(out),
                                 val_for_history="fer2013_validation")
    summary.pop("_model", None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    ev = summary["evaluation"]["fer2013_validation"]
    plain = ev.get("expression", {}).get("accuracy", float("nan"))
    print(f"fer2013 validation: accuracy {plain:.4f} (plain), {headline(summary):.4f} (reported"
          f"{', TTA 10 views' if cfg.tta else ''}); macro-F1 {ev.get('expression', {}).get('macro_f1', float('nan')):.4f}")
    dev = summary["device"]
    print(f"class-prior baseline on the same validation faces: {prior:.4f}")
    print(f"RESULT source={labels} data={data} fer_val_acc={headline(summary):.4f} fer_val_acc_notta={plain:.4f} "
          f"class_prior_acc={prior:.4f} epochs={summary['epochs_run']} train_s={summary['train_seconds']} "
          f"images_per_s={summary['images_per_s']} device={str(dev.get('device_name', dev.get('device'))).replace(' ', '_')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
