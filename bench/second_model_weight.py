"""How much weight the offline annotator's second expression model gets (``SECOND_MODEL_WEIGHT``).

    .venv/bin/python bench/second_model_weight.py --expression-checkpoint CKPT [--data DIR] [--split S]

On the dev faces of ``--data`` (FER2013, CK+, wild in the ``../shared/data`` manifest format,
cropped by the platform's own ingestion, every label hidden), the identity view of each face is
scored by the fused fer model (what the offline annotator uses without a second model) and by
the checkpoint. The linear pool ``(1 - w)·fused + w·checkpoint`` is swept over ``w``; ``w`` is
chosen on the calibration half of the faces (the same subject-wise halves as
``bench/selective.py``) by mean log-loss, once for all faces and once per source (posed faces
may want none of a model trained in the wild), and accuracy is reported on the other half
beside the two models alone (``w=0``, the baseline, and ``w=1``), per source. The per-source
choice is printed in the form ``SEKE_EXPRESSION_CHECKPOINT_WEIGHTS`` and the benches'
``--expression-checkpoint-weights`` take.

Last line: ``RESULT source=offline+checkpoint data=… weight=… weights=… acc_fused=… acc_pooled=…
acc_pooled_per_source=… acc_checkpoint=… fer_acc_fused=… fer_acc_pooled=… nll_fused=…
nll_pooled=… nll_pooled_per_source=…`` (evaluation half).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke import metrics  # noqa: E402
from seke.bench_data import add_dev_face_arguments, data_field  # noqa: E402
from seke.taxonomy import EXPRESSIONS  # noqa: E402

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def pooled(fused: np.ndarray, second: np.ndarray, w: float) -> np.ndarray:
    return (1 - w) * fused + w * second


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-6, 1.0))))


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return metrics.accuracy([EXPRESSIONS[i] for i in y], [EXPRESSIONS[i] for i in probs.argmax(1)])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dev_face_arguments(ap, Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data")))
    ap.add_argument("--expression-checkpoint", required=True, help="checkpoint folder from the training assets, or several comma-separated (an ensemble)")
    args = ap.parse_args(argv)
    from bench.selective import _sv_bench, dev_faces, half  # the selective bench's faces and halves
    from seke.annotators.offline import ANY_SOURCE, OfflineAnnotator, decode_crop, format_second_weights
    from seke.knowledge import knowledge_v1
    from seke.train.expression_model import load_expression_model

    loaded = dev_faces(_sv_bench(), args.data, args.per_set, args.split, args.subject_patterns)
    if loaded is None:
        return 2
    faces, gold, used = loaded
    try:
        second = load_expression_model(args.expression_checkpoint)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"no checkpoint: {exc}", file=sys.stderr)
        return 2
    annotator = OfflineAnnotator(knowledge_v1(), seed=0)
    print(f"fused model: {annotator.model}\nsecond model: {second.version}")
    rows = []   # (source, half, gold index, fused probs, second probs)
    for f in faces:
        g = gold[f.face_id].expression
        if g not in EXPRESSIONS:
            continue
        try:
            img = decode_crop(f.image_png)
            ev, _ = annotator._evidence(f.face_id, img, 0)   # the identity view, as sampled
        except ValueError:
            continue
        fused = np.array([annotator._expr_probs(ev)[e] for e in EXPRESSIONS])
        rows.append((f.source, half(f), EXPRESSIONS.index(g), fused, second.probs(img)))
    if not rows:
        print("no real data: no dev face could be scored", file=sys.stderr)
        return 2

    def part(h: int, source: str | None = None):
        sel = [r for r in rows if r[1] == h and (source is None or r[0] == source)]
        return (np.array([r[2] for r in sel]), np.stack([r[3] for r in sel]) if sel else np.zeros((0, 8)),
                np.stack([r[4] for r in sel]) if sel else np.zeros((0, 8)))

    def best_weight(source: str | None) -> tuple[float, dict[float, float]]:
        y, f, s = part(0, source)
        sweep = {w: log_loss(pooled(f, s, w), y) for w in WEIGHTS}
        return min(sweep, key=sweep.get), sweep

    sources = sorted({r[0] for r in rows})
    chosen, sweep = best_weight(None)
    print("calibration half, mean log-loss by weight: " + " ".join(f"{w:g}:{v:.4f}" for w, v in sweep.items()))
    per_source = {ANY_SOURCE: chosen}
    for source in sources:
        if len(part(0, source)[0]):
            per_source[source], sweep = best_weight(source)
            print(f"  {source}: " + " ".join(f"{w:g}:{v:.4f}" for w, v in sweep.items()))
    spec = format_second_weights(per_source)
    print(f"chosen weight (calibration half): {chosen:g}; per source: {spec}")
    print(f"{'source':8s} {'faces':>6s} {'fused':>7s} {'pooled':>7s} {'per-src':>7s} {'checkpoint':>10s}"
          "   (evaluation half, accuracy)")
    out = {}
    for source in sources + [None]:
        y, f, s = part(1, source)
        if not len(y):
            continue
        w_of = np.array([per_source.get(r[0], chosen) for r in rows if r[1] == 1 and source in (None, r[0])])
        by_source = (1 - w_of[:, None]) * f + w_of[:, None] * s
        accs = (accuracy(f, y), accuracy(pooled(f, s, chosen), y), accuracy(s, y), accuracy(by_source, y))
        out[source] = accs + (log_loss(f, y), log_loss(pooled(f, s, chosen), y), log_loss(by_source, y))
        print(f"{source or 'all':8s} {len(y):6d} {accs[0]:7.3f} {accs[1]:7.3f} {accs[3]:7.3f} {accs[2]:10.3f}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    fer = out.get("fer2013", (float("nan"),) * 7)
    print(f"RESULT source=offline+checkpoint data={data_field(counts, used)} weight={chosen:g} weights={spec} "
          f"acc_fused={out[None][0]:.4f} acc_pooled={out[None][1]:.4f} acc_pooled_per_source={out[None][3]:.4f} "
          f"acc_checkpoint={out[None][2]:.4f} fer_acc_fused={fer[0]:.4f} fer_acc_pooled={fer[1]:.4f} "
          f"nll_fused={out[None][4]:.4f} nll_pooled={out[None][5]:.4f} nll_pooled_per_source={out[None][6]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
