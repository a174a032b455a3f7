"""Label-noise audit of human labels: recall/precision of deliberately flipped FER2013 labels.

    python bench/label_noise.py [--data DIR] [--flip 0.05] [--max-share 0.10] [--seed 0]

FER2013 *validation* (dev split; out-of-sample for the offline annotator's expression model,
which was trained on FER2013 train). The offline annotator's expression model gives blind
probabilities per face (as audit mode records them); 5 % of the human labels are flipped to a
random other class present in the split; :func:`seke.label_noise.find_issues` flags suspected
errors. Recall/precision are measured on the flips (a flagged unflipped face may be one of
FER2013's own errors, so precision is a lower bound). Baselines measured in the same run, each
flagging as many faces as the audit does: a seeded random pick, and the faces whose given label
has the lowest model probability (self-confidence ranking without cleanlab). A data folder
without manifest, or without a face of ``--split``, exits 2.

Last line: ``RESULT source=offline data=fer2013[SPLIT]:N recall=… precision=… flagged_share=…
random_recall=… low_confidence_recall=… …``.
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

from seke.faces import BadImage, decode_image, read_file  # noqa: E402
from seke.label_noise import DEFAULT_MAX_SHARE, find_issues  # noqa: E402
from seke.taxonomy import EXPRESSIONS, normalise_expression  # noqa: E402
from seke.vision.expression import FER_CLASSES, FER_TO_TAXONOMY, expression_probs_fer  # noqa: E402

SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "fer2013")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--max-share", type=float, default=DEFAULT_MAX_SHARE)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.data / "manifest.csv").exists():
        print(f"no data: no manifest under {args.data}", file=sys.stderr)
        return 2
    man = pl.read_csv(args.data / "manifest.csv", infer_schema_length=0).filter(pl.col("split") == args.split)
    if man.is_empty():
        print(f"no data: no row with split={args.split!r} in {args.data}/manifest.csv", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    labels, probs = [], []
    for name, expr in man.select("image", "expression").iter_rows():
        try:
            img = decode_image(read_file(args.data / name), name)
        except BadImage:
            continue
        p = expression_probs_fer(img)
        row = {e: 0.0 for e in EXPRESSIONS}
        for c, v in zip(FER_CLASSES, p):
            row[FER_TO_TAXONOMY[c]] = float(v)
        labels.append(normalise_expression(expr))
        probs.append([row[e] for e in EXPRESSIONS])
    probs_a = np.array(probs)
    n = len(labels)
    acc = float(np.mean([EXPRESSIONS[int(np.argmax(p))] == lab for p, lab in zip(probs_a, labels)]))
    rng = np.random.default_rng(args.seed)
    classes = sorted(set(labels))
    flipped = rng.choice(n, size=int(round(args.flip * n)), replace=False)
    noisy = list(labels)
    for i in flipped:
        noisy[i] = rng.choice([c for c in classes if c != labels[i]])
    t1 = time.perf_counter()
    res = find_issues(noisy, probs_a, max_share=args.max_share)
    flagged = set(np.nonzero(res.issue)[0].tolist())
    hits = len(flagged & set(flipped.tolist()))
    recall = hits / len(flipped)
    precision = hits / len(flagged) if flagged else 0.0
    share = len(flagged) / n
    # baselines flagging the same number of faces: at random, and by lowest P(given label)
    flips = set(flipped.tolist())
    pick = set(np.random.default_rng(args.seed + 1).choice(n, size=len(flagged), replace=False).tolist())
    random_recall = len(pick & flips) / len(flips)
    p_given = probs_a[np.arange(n), [EXPRESSIONS.index(lab) for lab in noisy]]
    low_conf = set(np.argsort(p_given, kind="stable")[:len(flagged)].tolist())
    low_conf_recall = len(low_conf & flips) / len(flips)
    print(f"{n} faces ({args.split}), model accuracy on the given labels {acc:.3f}; flipped {len(flipped)}; "
          f"probabilities {t1 - t0:.1f}s, cleanlab {time.perf_counter() - t1:.2f}s")
    for ms in (0.05, 0.10, 0.15):
        r = find_issues(noisy, probs_a, max_share=ms)
        f = set(np.nonzero(r.issue)[0].tolist())
        h = len(f & set(flipped.tolist()))
        print(f"max_share={ms:.2f}: flagged {len(f)} ({len(f) / n:.3f}), recall {h / len(flipped):.3f}, "
              f"precision {h / max(1, len(f)):.3f}")
    print(f"baselines flagging {len(flagged)} faces: random recall {random_recall:.3f}, "
          f"lowest P(given label) recall {low_conf_recall:.3f}")
    print(f"RESULT source=offline data={args.data.name}[{args.split}]:{n} recall={recall:.3f} "
          f"precision={precision:.3f} flagged_share={share:.3f} random_recall={random_recall:.3f} "
          f"low_confidence_recall={low_conf_recall:.3f} max_share={args.max_share} flip={args.flip}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
