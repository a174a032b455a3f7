"""Certified selective acceptance on real dev faces (issue 15, item 1): realized vs target error.

    PYTHONPATH=. python bench/selective.py [--data DIR] [--split S] [--per-set N]
                                           [--targets 0.05,0.10,0.20] [--delta 0.1]

The offline annotator labels the dev faces of ``--data`` in audit mode (every human label
hidden) with SV-UAMC. Faces are split in half by a hash of their id: certificates
(:mod:`seke.selective`, Learn then Test) are fitted per source and granularity on the first
half, and the realized error among labels they accept is measured on the second half, never
seen by the fit. Baselines in the same run: SV-UAMC's own accepted labels (no certificate) and
every candidate label (full coverage). Exits 2 without real faces (no simulated fallback).

RESULT: ``expr_target=0.10 expr_realized_error expr_coverage expr_coverage_at_0.20
au_realized_error au_coverage accepted_error_ratio`` (certified error ÷ SV-UAMC accepted error)
``full_coverage_acc``, plus ``source=`` and ``data=``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke import metrics  # noqa: E402
from seke.audit import AuditPair, audit_pairs  # noqa: E402
from seke.bench_data import DEFAULT_SPLIT, NoData, data_field  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.selective import certify  # noqa: E402
from seke.sv_uamc import SamplingConfig, run_sampling  # noqa: E402


def _sv_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sv_uamc", ROOT / "bench" / "sv_uamc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def half(face_id: str) -> int:
    """0: calibration, 1: evaluation (stable hash, independent of order)."""
    return hashlib.sha256(f"selective:{face_id}".encode()).digest()[0] & 1


def realized(pairs: Sequence[AuditPair], certs: dict[str, Any], source_of: dict[str, str]) -> tuple[float, float]:
    """(error among certified-accepted pairs, accepted share) on evaluation pairs."""
    acc = [p for p in pairs if p.accepted and certs[source_of[p.face_id]].accepts(p.confidence)]
    err = 1 - float(np.mean([p.correct for p in acc])) if acc else float("nan")
    return err, len(acc) / len(pairs) if pairs else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data")))
    ap.add_argument("--split", default=DEFAULT_SPLIT)
    ap.add_argument("--per-set", type=int, default=300)
    ap.add_argument("--targets", default="0.05,0.10,0.20")
    ap.add_argument("--delta", type=float, default=0.1)
    args = ap.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    split = None if args.split == "all" else args.split
    sv = _sv_bench()
    try:
        from seke.annotators.offline import OfflineAnnotator

        faces, gold, notes, used = sv.offline_dev_faces(args.data, args.per_set, split)
    except (NoData, ImportError, FileNotFoundError) as exc:
        print(f"no real data: {exc}", file=sys.stderr)
        return 2
    for n in notes:
        print(f"  {n}")
    if not faces:
        print("no real data: no dev faces found", file=sys.stderr)
        return 2
    knowledge = knowledge_v1()
    res = run_sampling(faces, sv.prompts_for(faces), OfflineAnnotator(knowledge, seed=0), knowledge, SamplingConfig())
    source_of = {f.face_id: f.source for f in faces}
    pairs = audit_pairs(res.labels, gold)
    sources = sorted(set(source_of.values()))
    by = {(g, h): [p for p in pairs if p.granularity == g and half(p.face_id) == h] for g in ("expression", "au") for h in (0, 1)}
    out: dict[str, float] = {}
    print(f"\n{'gran':<11}{'target':>7}{'realized':>10}{'coverage':>10}  thresholds per source (calibration pairs)")
    for g in ("expression", "au"):
        for t in targets:
            certs = {s: certify([p.confidence for p in by[(g, 0)] if p.accepted and source_of[p.face_id] == s],
                                [p.correct for p in by[(g, 0)] if p.accepted and source_of[p.face_id] == s],
                                t, args.delta, source=s, granularity=g) for s in sources}
            err, cov = realized(by[(g, 1)], certs, source_of)
            out[f"{g}_{t:.2f}_error"], out[f"{g}_{t:.2f}_coverage"] = err, cov
            print(f"{g:<11}{t:>7.2f}{err:>10.3f}{cov:>10.3f}  "
                  + ", ".join(f"{s}: {c.threshold} (n={c.n_calibration})" for s, c in certs.items()))
    ev = [p for p in by[("expression", 1)]]
    sv_acc = [p for p in ev if p.accepted]
    sv_err = 1 - float(np.mean([p.correct for p in sv_acc])) if sv_acc else float("nan")
    ev_rows = [r for r in res.labels if half(r["face_id"]) == 1 and gold[r["face_id"]].expression is not None]
    full_acc = metrics.accuracy([gold[r["face_id"]].expression for r in ev_rows], [r.get("expression") or "" for r in ev_rows])
    print(f"baselines on the evaluation half: SV-UAMC accepted error {sv_err:.3f} "
          f"(coverage {len(sv_acc) / len(ev):.3f}), full-coverage accuracy {full_acc:.3f}")
    counts: dict[str, int] = {}
    for f in faces:
        counts[f.source] = counts.get(f.source, 0) + 1
    kv = {"expr_target": 0.10, "expr_realized_error": out.get("expression_0.10_error", float("nan")),
          "expr_coverage": out.get("expression_0.10_coverage", float("nan")),
          "expr_coverage_at_0.20": out.get("expression_0.20_coverage", float("nan")),
          "au_realized_error": out.get("au_0.10_error", float("nan")),
          "au_coverage": out.get("au_0.10_coverage", float("nan")),
          "accepted_error_ratio": out.get("expression_0.10_error", float("nan")) / sv_err,
          "sv_accepted_error": sv_err, "full_coverage_acc": full_acc}
    print(f"RESULT source=offline data={data_field(counts, used)} delta={args.delta} "
          + " ".join(f"{k}={v:.3f}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
