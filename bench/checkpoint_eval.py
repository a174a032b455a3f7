"""Score trained checkpoints on the shared dev sets: fer2013 validation and CK+ (human FACS AUs).

    PYTHONPATH=. .venv/bin/python bench/checkpoint_eval.py CKPT [CKPT ...]

A checkpoint is a folder written by the training assets or ``bench/train_fer.py``
(``…/models/<run>/data=…/config=…``); ``A,B,C`` is the ensemble of those checkpoints, their
predicted probabilities averaged (as ``SEKE_EXPRESSION_CHECKPOINT=A,B,C`` pools them in the
offline annotator), scored as one column. Each is scored with the recipe it was trained with (TTA
included when the recipe has it): expression accuracy / macro-F1 on both sets, and on CK+ the
mean F1 of the AU head against FACS codes. The first checkpoint is the baseline of the Δ column;
the class prior of each set (always its commonest expression) and, on CK+, calling every AU
present are the chance-level references, measured on the same faces. Without either dev set it
exits 2.

Last line: ``RESULT source=checkpoint data=fer2013[validation]:N,ckplus:M`` with the first two
checkpoints' figures (``a_*``, ``b_*``), their deltas and the references (``fer_acc_class_prior``,
``ck_acc_class_prior``, ``ck_au_f1_all_present``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from seke.train.checkpoint import load_checkpoint  # noqa: E402
from seke.train.evaluate import evaluate_predictions, predict  # noqa: E402
from seke.train.expression_model import checkpoint_paths  # noqa: E402
from seke.train.run import load_ckplus, load_fer_validation  # noqa: E402

METRICS = (("fer2013_validation", "expression", "accuracy"), ("fer2013_validation", "expression", "macro_f1"),
           ("ckplus", "expression", "accuracy"), ("ckplus", "aus", "mean_f1"))


def score(spec: str) -> tuple[str, dict]:
    """(name, metrics per dev set) of one checkpoint, or of the ensemble a comma-separated spec
    names (:func:`seke.train.expression_model.checkpoint_paths`): the members' predictions,
    each made with its own recipe, averaged as the offline annotator averages them."""
    loaded = [load_checkpoint(p)[:2] for p in checkpoint_paths(spec)]
    out = {}
    for name, load in (("fer2013_validation", load_fer_validation), ("ckplus", load_ckplus)):
        by_size = {size: load(size) for size in {cfg.image_size for _, cfg in loaded}}  # one read per input size
        if any(arrays is None for arrays in by_size.values()):
            out[name] = {}
            continue
        preds = [predict(model, by_size[cfg.image_size].images, "cpu", cfg) for model, cfg in loaded]
        out[name] = evaluate_predictions({k: np.mean([p[k] for p in preds], axis=0) for k in preds[0]},
                                         by_size[loaded[0][1].image_size])
    names = [cfg.name for _, cfg in loaded]
    return names[0] if len(names) == 1 else f"ensemble of {len(names)}: {'+'.join(names)}", out


def references() -> tuple[dict[str, float], dict[str, int]]:
    """Chance-level references on the dev sets (class prior; every AU present on CK+) and the
    face counts behind them."""
    from seke.bench_data import class_prior_rate
    from seke.train.evaluate import au_metrics

    nan = float("nan")
    ref, counts = {"fer_acc_class_prior": nan, "ck_acc_class_prior": nan, "ck_au_f1_all_present": nan}, {}
    fer, ck = load_fer_validation(), load_ckplus()
    if fer is not None:
        ref["fer_acc_class_prior"] = class_prior_rate(fer.expression[fer.expression >= 0].tolist())
        counts["fer2013[validation]"] = len(fer)
    if ck is not None:
        ref["ck_acc_class_prior"] = class_prior_rate(ck.expression[ck.expression >= 0].tolist())
        ref["ck_au_f1_all_present"] = au_metrics(np.ones_like(ck.aus), ck.aus, ck.aus_w > 0)["mean_f1"]
        counts["ckplus"] = len(ck)
    return ref, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ref, counts = references()
    if not counts:
        print("no data: neither fer2013 nor ckplus found under ../shared/data (SEKE_SHARED_DATA)", file=sys.stderr)
        return 2
    rows = [score(p) for p in args.checkpoints]
    print(f"{'metric':<42}" + "".join(f"{n[:34]:>36}" for n, _ in rows) + (f"{'Δ vs first':>12}" if len(rows) > 1 else ""))
    values = []
    for ev, head, key in METRICS:
        vals = [r[ev].get(head, {}).get(key, float("nan")) for _, r in rows]
        values.append(vals)
        delta = f"{vals[1] - vals[0]:>+12.4f}" if len(vals) > 1 else ""
        print(f"{ev + ' ' + head + ' ' + key:<42}" + "".join(f"{v:>36.4f}" for v in vals) + delta)
    for label, key in (("fer2013_validation accuracy, class prior", "fer_acc_class_prior"),
                       ("ckplus accuracy, class prior", "ck_acc_class_prior"),
                       ("ckplus aus mean_f1, every AU present", "ck_au_f1_all_present")):
        print(f"{label:<42}{ref[key]:>36.4f}  (reference)")
    print(f"scored {len(rows)} checkpoint(s) in {time.perf_counter() - t0:.1f}s")
    keys = ("fer_acc", "fer_f1", "ck_acc", "ck_au_f1")
    parts = [f"a_{k}={v[0]:.4f}" for k, v in zip(keys, values)]
    if len(rows) > 1:
        parts += [f"b_{k}={v[1]:.4f}" for k, v in zip(keys, values)]
        parts += [f"delta_{k}={v[1] - v[0]:+.4f}" for k, v in zip(keys, values)]
    parts += [f"{k}={v:.4f}" for k, v in ref.items()]
    print(f"RESULT source=checkpoint data={','.join(f'{k}:{v}' for k, v in counts.items())} " + " ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
