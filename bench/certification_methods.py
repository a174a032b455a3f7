"""The two certification methods of ``seke/selective.py`` on simulated audit faces with a known truth.

    PYTHONPATH=. python bench/certification_methods.py [--draws 100] [--seed 123]

Why simulated: only with the true error curve known can a benchmark say both how much coverage
a method certifies (against the most any grid threshold could certify, the oracle) and how
often its bound is broken (the true error at the certified threshold above the target; the
guarantee says at most ``delta`` of the draws). The dev faces give one draw per source; this
gives hundreds per setting.

Settings: four error curves over a max-probability-like score on [1/8, 1] — ``fer-like``
(overall error about 0.35, smooth), ``posed`` (lower error), ``wild`` (higher) and ``step``
(flat error 0.08 above 0.6, 0.5 below) — each with 300, 1,000 and 1,500 audit faces and targets
0.05, 0.10 and 0.20, ``delta`` 0.1. Each draw certifies with ``split_start`` (the default)
and with ``fallback_chain`` (the baseline) on the same faces; coverage and error are measured on the
curve's population (400,000 faces).

Clustered settings, as CK+ is (frames of one subject err together): a population of subjects
posing 1 to 5 sequences of 3 near-identical frames (same score, same outcome) on the ``posed``
curve, each subject's errors shifted by its own random effect (normal, sd 1.5 on the logit); draws of 45 and 150 subjects (CK+'s calibration half has
about 45), targets 0.10 and 0.20. Each method certifies twice on the same faces: with the
subject as the unit (the keys the pipeline passes) and counting frames as independent faces.

RESULT: ``mean_coverage_split mean_coverage_chain`` (over the independent settings)
``settings_split_better settings_chain_better`` (mean coverage higher by more than 0.002)
``max_violation_split max_violation_chain`` (the largest share of draws, over those settings,
whose bound was broken) ``max_violation_clustered_subjects max_violation_clustered_frames``
(the same over the clustered settings and both methods, subjects as the unit vs frames)
``mean_coverage_clustered_subjects_split`` (what the split certifies there with subjects as the unit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke.selective import METHODS, certify_losses  # noqa: E402

CURVES = ("fer-like", "posed", "wild", "step")


def population(curve: str, rng: np.random.Generator, size: int = 400_000) -> tuple[np.ndarray, np.ndarray]:
    """(scores, probability of a wrong label) of a curve's population."""
    if curve == "fer-like":
        s = 0.125 + 0.875 * rng.beta(2.0, 1.6, size)
        return s, np.clip(1.05 * (1 - s) ** 1.2, 0, 1)
    if curve == "posed":
        s = 0.125 + 0.875 * rng.beta(3.0, 1.2, size)
        return s, np.clip(0.8 * (1 - s) ** 1.4, 0, 1)
    if curve == "wild":
        s = 0.125 + 0.875 * rng.beta(1.5, 2.0, size)
        return s, np.clip(1.0 * (1 - s) ** 0.9, 0, 1)
    if curve == "step":
        s = 0.125 + 0.875 * rng.beta(2.0, 2.0, size)
        return s, np.where(s > 0.6, 0.08, 0.5)
    raise ValueError(f"unknown curve {curve!r}")


def clustered_population(rng: np.random.Generator, subjects: int = 20_000
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores, probability of a wrong label, subject, sequence) per frame of the clustered
    setting, shaped like CK+: each subject poses 1 to 5 sequences of 3 near-identical frames
    (one score and one error probability per sequence, the frames' losses drawn together: see
    ``main``), on the ``posed`` curve with a per-subject shift on the logit of the error."""
    sequences = rng.integers(1, 6, subjects)
    seq_subject = np.repeat(np.arange(subjects), sequences)
    score, p = population("posed", rng, len(seq_subject))
    p = np.clip(p, 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p)) + rng.normal(0.0, 1.5, subjects)[seq_subject]
    frame_seq = np.repeat(np.arange(len(seq_subject)), 3)
    return score[frame_seq], (1 / (1 + np.exp(-logit)))[frame_seq], seq_subject[frame_seq], frame_seq


def truth(score: np.ndarray, p_wrong: np.ndarray, threshold: float | None) -> tuple[float, float]:
    """(coverage, true error among accepted) of a threshold on the population."""
    if threshold is None:
        return 0.0, 0.0
    acc = score >= threshold
    return float(acc.mean()), float(p_wrong[acc].mean()) if acc.any() else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=100, help="draws of audit faces per setting")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--delta", type=float, default=0.1)
    args = ap.parse_args(argv)
    if args.draws < 1 or not 0 < args.delta < 1:
        print("--draws must be >= 1 and --delta in (0, 1)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    cover: dict[str, list[float]] = {m: [] for m in METHODS}
    violation: dict[str, list[float]] = {m: [] for m in METHODS}
    better = {m: 0 for m in METHODS}
    print(f"{'curve':<9}{'faces':>6}{'target':>7}  mean coverage (share of draws whose bound broke) per method; oracle")
    for curve in CURVES:
        score, p_wrong = population(curve, rng)
        for n in (300, 1000, 1500):
            for target in (0.05, 0.10, 0.20):
                got: dict[str, list[tuple[float, bool]]] = {m: [] for m in METHODS}
                for _ in range(args.draws):
                    idx = rng.integers(0, len(score), n)
                    loss = (rng.random(n) < p_wrong[idx]).astype(float)
                    for m in METHODS:
                        cov, err = truth(score, p_wrong, certify_losses(score[idx], loss, target, args.delta, method=m).threshold)
                        got[m].append((cov, err > target))
                means = {m: float(np.mean([c for c, _ in v])) for m, v in got.items()}
                for m in METHODS:
                    cover[m].append(means[m])
                    violation[m].append(float(np.mean([b for _, b in got[m]])))
                    if means[m] > max(v for k, v in means.items() if k != m) + 0.002:
                        better[m] += 1
                oracle = max((cov for cov, err in (truth(score, p_wrong, t) for t in np.linspace(0, 1, 101))
                              if err <= target), default=0.0)
                print(f"{curve:<9}{n:>6}{target:>7.2f}  " + "  ".join(
                    f"{m} {means[m]:.3f} ({violation[m][-1]:.2f})" for m in METHODS) + f"  oracle {oracle:.3f}", flush=True)
    clustered: dict[tuple[str, str], list[tuple[float, float]]] = {}
    print(f"\nclustered (subject random effect): mean coverage (share of draws whose bound broke), "
          f"subjects as the unit vs frames counted as independent; oracle")
    c_score, c_wrong, c_subject, c_sequence = clustered_population(rng)
    starts = np.searchsorted(c_subject, np.arange(c_subject.max() + 1))
    ends = np.append(starts[1:], len(c_subject))
    for n_subjects in (45, 150):
        for target in (0.10, 0.20):
            got_c: dict[tuple[str, str], list[tuple[float, bool]]] = {(m, u): [] for m in METHODS for u in ("subjects", "frames")}
            for _ in range(args.draws):
                chosen = rng.choice(len(starts), n_subjects, replace=False)
                idx = np.concatenate([np.arange(starts[i], ends[i]) for i in chosen])
                draw = rng.random(c_sequence[idx].max() + 1)  # one outcome per sequence: its frames err together
                loss = (draw[c_sequence[idx]] < c_wrong[idx]).astype(float)
                keys = [f"subject:{k}" for k in c_subject[idx]]
                for (m, u), v in got_c.items():
                    cert = certify_losses(c_score[idx], loss, target, args.delta, method=m,
                                          keys=keys if u == "subjects" else None)
                    cov, err = truth(c_score, c_wrong, cert.threshold)
                    v.append((cov, err > target))
            for k, v in got_c.items():
                clustered.setdefault(k, []).append((float(np.mean([c for c, _ in v])), float(np.mean([b for _, b in v]))))
            oracle = max((cov for cov, err in (truth(c_score, c_wrong, t) for t in np.linspace(0, 1, 101))
                          if err <= target), default=0.0)
            print(f"{'clustered':<9}{n_subjects:>4}s {target:>6.2f}  " + "  ".join(
                f"{m}/{u} {clustered[(m, u)][-1][0]:.3f} ({clustered[(m, u)][-1][1]:.2f})" for m, u in got_c)
                + f"  oracle {oracle:.3f}", flush=True)
    split, chain = "split_start", "fallback_chain"
    print(f"RESULT data=simulated:{len(CURVES)}curves×3sizes×3targets draws={args.draws} delta={args.delta} "
          f"mean_coverage_split={np.mean(cover[split]):.4f} mean_coverage_chain={np.mean(cover[chain]):.4f} "
          f"settings_split_better={better[split]} settings_chain_better={better[chain]} "
          f"max_violation_split={max(violation[split]):.3f} max_violation_chain={max(violation[chain]):.3f} "
          + " ".join(f"max_violation_clustered_{u}={max(b for (m, u_), v in clustered.items() if u_ == u for _, b in v):.3f}"
                     for u in ("subjects", "frames"))
          + f" mean_coverage_clustered_subjects_split={np.mean([c for c, _ in clustered[(split, 'subjects')]]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
