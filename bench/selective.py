"""Certified selective acceptance on real dev faces (issue 15, item 1): realized vs target error.

    PYTHONPATH=. python bench/selective.py [--data DIR] [--split S] [--per-set N]
                                           [--targets 0.05,0.10,0.20] [--delta 0.1]

The offline annotator labels the dev faces of ``--data`` in audit mode (every human label
hidden) with SV-UAMC. Faces are split in half by a hash of their id: certificates
(:mod:`seke.selective`, Learn then Test) are fitted per source and granularity on the first
half, and the realized error among labels they accept is measured on the second half, never
seen by the fit. Baselines in the same run: SV-UAMC's own accepted labels (no certificate) and
every candidate label (full coverage). Exits 2 without real faces (no simulated fallback).

Scores and losses are the pipeline's (:func:`seke.selective.face_score` / ``face_loss``): AUs
with the face as the unit (per-face share of wrong AUs, Hoeffding–Bentkus), so the AU bound no
longer treats 23 decisions of one face as independent.

RESULT: ``expr_target=0.10 expr_realized_error expr_coverage expr_coverage_at_0.20
fer_coverage_at_0.20 max_expr_excess_over_target`` (worst realized − target over sources and
targets) ``au_realized_error au_coverage accepted_error_ratio`` (certified error ÷ SV-UAMC
accepted error) ``sv_accepted_error full_coverage_acc fer_full_coverage_acc ece_accepted``,
plus ``source=`` and ``data=``.
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
from seke.audit import audit_pairs  # noqa: E402
from seke.bench_data import DEFAULT_SPLIT, NoData, data_field  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.selective import audit_points, certify_losses, face_loss, face_score  # noqa: E402
from seke.sv_uamc import SamplingConfig, run_sampling  # noqa: E402


def _sv_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sv_uamc", ROOT / "bench" / "sv_uamc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def half(face_id: str) -> int:
    """0: calibration, 1: evaluation (stable hash, independent of order)."""
    return hashlib.sha256(f"selective:{face_id}".encode()).digest()[0] & 1


def realized(rows: Sequence[dict], gold: dict, certs: dict[str, Any], source_of: dict[str, str], g: str,
             sources: Sequence[str]) -> dict[str, tuple[float, float, int]]:
    """Per source and pooled ("all"): (mean loss among certified-accepted faces, accepted share
    of the source's evaluation faces, faces) on evaluation rows (:func:`seke.selective.face_loss`)."""
    out = {}
    for s in [*sources, "all"]:
        rs = [r for r in rows if s == "all" or source_of[r["face_id"]] == s]
        lossy = [(r, face_loss(r, gold[r["face_id"]], g)) for r in rs]
        lossy = [(r, lo) for r, lo in lossy if lo is not None]
        acc = [lo for r, lo in lossy if r["status"] == "accepted" and certs[source_of[r["face_id"]]].accepts(face_score(r, g))]
        out[s] = (float(np.mean(acc)) if acc else float("nan"), len(acc) / len(lossy) if lossy else float("nan"), len(lossy))
    return out


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
    sources = sorted(set(source_of.values()))
    cal_rows = [r for r in res.labels if half(r["face_id"]) == 0]
    ev_rows = [r for r in res.labels if half(r["face_id"]) == 1]
    out: dict[str, Any] = {}
    print(f"\n{'gran':<11}{'target':>7}  realized error / coverage on the evaluation half, per source; thresholds fitted on the other half")
    for g in ("expression", "aus"):
        for t in targets:
            certs = {}
            for s in sources:
                sc, ls, _ = audit_points([r for r in cal_rows if source_of[r["face_id"]] == s], gold, g)
                certs[s] = certify_losses(sc, ls, t, args.delta, bounded=(g == "aus"), source=s, granularity=g)
            out[(g, t)] = realized(ev_rows, gold, certs, source_of, g, sources)
            print(f"{g:<11}{t:>7.2f}  " + "  ".join(f"{s}: {e:.3f}/{c:.3f} (thr {certs[s].threshold if s in certs else '-'}, "
                                                     f"n_cal={certs[s].n_calibration if s in certs else '-'})"
                                                     if s != "all" else f"all: {e:.3f}/{c:.3f}"
                                                     for s, (e, c, _) in out[(g, t)].items()))
    sv_acc = [r for r in ev_rows if r["status"] == "accepted" and gold[r["face_id"]].expression is not None]
    sv_err = 1 - float(np.mean([r["expression"] == gold[r["face_id"]].expression for r in sv_acc])) if sv_acc else float("nan")
    ex_rows = [r for r in ev_rows if gold[r["face_id"]].expression is not None]
    full_acc = metrics.accuracy([gold[r["face_id"]].expression for r in ex_rows], [r.get("expression") or "" for r in ex_rows])
    fer_rows = [r for r in res.labels if source_of[r["face_id"]] == "fer2013"]
    fer_acc = metrics.accuracy([gold[r["face_id"]].expression for r in fer_rows],
                               [r.get("expression") or "" for r in fer_rows]) if fer_rows else float("nan")
    pairs = [p for p in audit_pairs(ev_rows, gold) if p.accepted and p.granularity == "expression"]
    ece_acc = metrics.ece([p.confidence for p in pairs], [p.correct for p in pairs]) if pairs else float("nan")
    print(f"baselines on the evaluation half: SV-UAMC accepted error {sv_err:.3f} "
          f"(coverage {len(sv_acc) / max(1, len(ex_rows)):.3f}), full-coverage accuracy {full_acc:.3f}; "
          f"FER2013 full-coverage accuracy (all its faces) {fer_acc:.3f}; ECE of SV-UAMC accepted labels {ece_acc:.3f}; "
          f"verdicts {res.stats['verdicts']}")
    excess = [e - t for (g, t), per in out.items() if g == "expression" for s, (e, c, n) in per.items()
              if s != "all" and not np.isnan(e)]
    counts: dict[str, int] = {}
    for f in faces:
        counts[f.source] = counts.get(f.source, 0) + 1
    nan = float("nan")
    kv = {"expr_target": 0.10, "expr_realized_error": out[("expression", 0.10)]["all"][0] if ("expression", 0.10) in out else nan,
          "expr_coverage": out[("expression", 0.10)]["all"][1] if ("expression", 0.10) in out else nan,
          "expr_coverage_at_0.20": out[("expression", 0.20)]["all"][1] if ("expression", 0.20) in out else nan,
          "fer_coverage_at_0.20": out[("expression", 0.20)].get("fer2013", (nan, nan, 0))[1] if ("expression", 0.20) in out else nan,
          "max_expr_excess_over_target": max(excess) if excess else nan,
          "au_realized_error": out[("aus", 0.10)]["all"][0] if ("aus", 0.10) in out else nan,
          "au_coverage": out[("aus", 0.10)]["all"][1] if ("aus", 0.10) in out else nan,
          "accepted_error_ratio": (out[("expression", 0.10)]["all"][0] / sv_err) if ("expression", 0.10) in out else nan,
          "sv_accepted_error": sv_err, "full_coverage_acc": full_acc, "fer_full_coverage_acc": fer_acc,
          "ece_accepted": ece_acc}
    print(f"RESULT source=offline data={data_field(counts, used)} delta={args.delta} "
          + " ".join(f"{k}={v:.3f}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
