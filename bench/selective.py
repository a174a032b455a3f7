"""Certified selective acceptance on real dev faces (issue 15, item 1): realized vs target error.

    PYTHONPATH=. python bench/selective.py [--data DIR] [--split S] [--per-set N] [--subject-patterns P]
                                           [--targets 0.05,0.10,0.20] [--delta 0.1] [--rows-out F.parquet]

The offline annotator labels the faces of ``--data`` (one set folder with a ``manifest.csv``, or
a folder of such sets, as ``bench/sv_uamc.py`` reads them) in audit mode (every human label
hidden) with SV-UAMC. Faces are split in half by a hash of their subject where the set names
subjects (CK+; wild, whose file names carry the person: ``--subject-patterns``), else of their
id: certificates
(:mod:`seke.selective`, Learn then Test) are fitted per source and granularity on the first
half, and the realized error among labels they accept is measured on the second half, never
seen by the fit. Exits 2 without real faces (no simulated fallback).

Baselines in the same run, on the same evaluation faces and the same annotator: single-shot and
fixed-10 (no early stopping, no verification) *at the same coverage* as each certificate, i.e.
their own most confident faces of the source, as many as the certificate accepted; SV-UAMC's
own accepted labels (no certificate); and every candidate label (full coverage). The default
``--per-set`` takes every dev face (FER2013 validation, CK+, wild: about 5,500 faces, 13
minutes on 2 cores, most of it fixed-10); certificates need hundreds of calibration faces per
source, so small runs certify little.

Scores and losses are the pipeline's (:func:`seke.selective.face_score` / ``face_loss``): AUs
with the face as the unit (per-face share of wrong AUs, Hoeffding–Bentkus).

ECE of accepted labels: raw, and after the pipeline's isotonic calibration
(:func:`seke.calibration.fit_calibration`, a map per source with enough faces) fitted on the
calibration half, measured pooled and per source.

Certificates use the pipeline's default method (:data:`seke.selective.DEFAULT_METHOD`, named
in the RESULT line as ``method=``); the other method is run on the same calibration faces and
its realized error and coverage are printed beside. Both take each face's subject where the set
names one, so CK+ and wild are tested with the subject as the unit.

RESULT: ``expr_target=0.10 expr_realized_error expr_coverage expr_coverage_at_0.20
fer_coverage_at_0.20`` (the default method's) ``fer_coverage_at_0.20_chain fer_coverage_at_0.20_split`` (each method's)
``fer_ceiling_coverage_at_0.20`` (the most coverage any threshold reaches at
error <= 0.20 on the evaluation half, picked with its labels: the ceiling, not a result)
``max_expr_excess_over_target`` (worst realized − target over sources and
targets) ``max_expr_excess_over_target_chain max_expr_excess_over_target_split`` ``au_realized_error au_coverage accepted_error_ratio`` (SV-UAMC's error among labels
certified at 0.10 ÷ single-shot's error at the same coverage) ``fixed10_error_ratio`` (the same
÷ fixed-10's) ``sv_accepted_error sv_error_ratio_equal_coverage`` (SV-UAMC's own accepted
error ÷ single-shot's at the same coverage per source, no certificate) ``sv_ratio_floor_rejecting_only``
(the same ratio for a verifier that rejects only wrong single-shot labels at that coverage: the
lowest a rejecting verifier can reach there) ``full_coverage_acc
fer_full_coverage_acc ece_accepted ece_accepted_calibrated``, plus ``source=`` and ``data=``.
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
from seke.bench_data import NoData, add_checkpoint_arguments, add_dev_face_arguments, data_field  # noqa: E402
from seke.calibration import fit_calibration  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.selective import DEFAULT_METHOD, METHODS, audit_points, certify_losses, face_loss, face_score  # noqa: E402
from seke.sv_uamc import SamplingConfig, run_sampling  # noqa: E402

#: Suffix of each certification method's RESULT keys.
SHORT = {"fallback_chain": "chain", "split_start": "split"}


def _sv_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sv_uamc", ROOT / "bench" / "sv_uamc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def dev_faces(sv: Any, data: Path, per_set: int, split: str | None,
              subject_patterns: dict[str, str] | None = None
              ) -> tuple[list[Any], dict[str, Any], dict[str, str | None]] | None:
    """(faces, gold, splits used) of the sv_uamc bench's audit-mode dev faces, its notes
    printed; None, with the reason on stderr, when there is no real face to measure."""
    try:
        faces, gold, notes, used = sv.offline_dev_faces(data, per_set, split, subject_patterns)
    except (NoData, ImportError, FileNotFoundError) as exc:
        print(f"no real data: {exc}", file=sys.stderr)
        return None
    for n in notes:
        print(f"  {n}")
    if not faces:
        print("no real data: no dev faces found", file=sys.stderr)
        return None
    return faces, gold, used


def half(face: Any) -> int:
    """0: calibration, 1: evaluation, by a stable hash of the face's subject where the set knows
    it (all frames of one CK+ subject, all photos of one wild person on one side, so no person
    is in both halves), else of
    its id; independent of order."""
    key = f"subject:{face.source}:{face.subject_id}" if face.subject_id else face.face_id
    return hashlib.sha256(f"selective:{key}".encode()).digest()[0] & 1


def fer_source(sources: Sequence[str]) -> str | None:
    """The FER2013 set the ``fer_*`` RESULT keys report: ``fer2013``, else the first set whose
    name contains ``fer`` (a held-out copy named otherwise), else None (those keys are NaN)."""
    return "fer2013" if "fer2013" in sources else next((s for s in sources if "fer" in s.lower()), None)


def losses_of(rows: Sequence[dict], gold: dict, source_of: dict[str, str], source: str, g: str) -> list[tuple[dict, float]]:
    """(row, loss) of the rows of ``source`` ("all": every source) whose loss against the hidden
    gold is defined (:func:`seke.selective.face_loss`): the faces every coverage here is a share of."""
    lossy = [(r, face_loss(r, gold[r["face_id"]], g)) for r in rows if source == "all" or source_of[r["face_id"]] == source]
    return [(r, lo) for r, lo in lossy if lo is not None]


def realized(rows: Sequence[dict], gold: dict, certs: dict[str, Any], source_of: dict[str, str], g: str,
             sources: Sequence[str]) -> dict[str, tuple[float, float, int]]:
    """Per source and pooled ("all"): (mean loss among certified-accepted faces, accepted share
    of the source's evaluation faces, faces) on evaluation rows."""
    out = {}
    for s in [*sources, "all"]:
        lossy = losses_of(rows, gold, source_of, s, g)
        acc = [lo for r, lo in lossy if r["status"] == "accepted" and certs[source_of[r["face_id"]]].accepts(face_score(r, g))]
        out[s] = (float(np.mean(acc)) if acc else float("nan"), len(acc) / len(lossy) if lossy else float("nan"), len(lossy))
    return out


def ceiling(rows: Sequence[dict], gold: dict, source_of: dict[str, str], g: str, source: str, target: float) -> float:
    """The most coverage any threshold on this score could reach on the evaluation half with mean
    loss <= ``target``, chosen *with* the evaluation labels: not a result, the ceiling that shows how
    much of the gap to it is the certificate's finite-sample price and how much the score's ranking."""
    lossy = losses_of(rows, gold, source_of, source, g)
    scored = sorted(((sc, lo) for sc, lo in ((face_score(r, g), lo) for r, lo in lossy if r["status"] == "accepted")
                     if sc is not None), key=lambda x: -x[0])
    if not scored:
        return float("nan")
    score = np.array([sc for sc, _ in scored])
    mean_loss = np.cumsum([lo for _, lo in scored]) / np.arange(1, len(scored) + 1)
    cut = np.append(score[1:] < score[:-1], True)  # a threshold cannot split tied scores
    ok = np.flatnonzero((mean_loss <= target) & cut)
    return float((ok.max() + 1) / len(lossy)) if ok.size else 0.0


def same_coverage_error(rows: Sequence[dict], gold: dict, certified: dict[str, tuple[float, float, int]],
                        source_of: dict[str, str], sources: Sequence[str]) -> float:
    """Expression error of a baseline's labels (``rows``, evaluation half) at the certificate's
    coverage: per source its most confident faces, as many as the certificate accepted there."""
    losses: list[float] = []
    for s in sources:
        cov = certified[s][1]
        lossy = losses_of(rows, gold, source_of, s, "expression")
        losses += metrics.most_confident([face_score(r, "expression") or 0.0 for r, _ in lossy], [lo for _, lo in lossy], cov)
    return float(np.mean(losses)) if losses else float("nan")


def perfect_rejector_error(rows: Sequence[dict], gold: dict, coverage: dict[str, tuple[float, float, int]],
                           source_of: dict[str, str], sources: Sequence[str]) -> float:
    """The lowest error a verifier could leave among ``rows``' labels (single-shot's, evaluation
    half) by rejecting only, at the given coverage per source: it rejects wrong labels first, so
    ``max(0, wrong - rejected) / accepted``. Below it a verifier must correct labels, not just
    reject them; it shows whether an error ratio is reachable at that coverage at all."""
    wrong_left = accepted = 0
    for s in sources:
        losses = [lo for _, lo in losses_of(rows, gold, source_of, s, "expression")]
        keep = round(coverage[s][1] * len(losses)) if coverage[s][1] == coverage[s][1] else 0
        wrong_left += max(0, int(sum(losses)) - (len(losses) - keep))
        accepted += keep
    return wrong_left / accepted if accepted else float("nan")


def ratio(out: dict, at_cov: dict, baseline: str, target: float = 0.10) -> float:
    """Certified error at ``target`` ÷ the baseline's error at the same coverage (NaN when undefined)."""
    key = ("expression", target)
    if key not in out or key not in at_cov or not at_cov[key][baseline]:
        return float("nan")
    return out[key]["all"][0] / at_cov[key][baseline]


def eces(pairs: Sequence[Any], calibration: Any) -> tuple[float, float]:
    """(raw, calibrated) ECE of expression pairs."""
    if not pairs:
        return float("nan"), float("nan")
    ok = [p.correct for p in pairs]
    return (metrics.ece([p.confidence for p in pairs], ok),
            metrics.ece([calibration.apply(p.confidence, "expression", p.source) for p in pairs], ok))


def _floats(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def write_rows(path: Path, rows: Sequence[dict], base_rows: dict[str, Sequence[dict]], gold: dict,
               source_of: dict[str, str], half_of: dict[str, int]) -> Path:
    """One Parquet row per face and strategy (SV-UAMC on every face, the baselines on the
    evaluation half): source, subject (where the set names one: certification by subject can be
    studied), half, status and abstain reason, expression, its certification score and loss, the
    gold label, and what another acceptance score could be built from (the
    aggregated class probabilities in :data:`seke.taxonomy.EXPRESSIONS` order, the consistency
    score, the verifier's reasons, the samples drawn). For re-analysis with DuckDB or polars
    without re-annotating."""
    import polars as pl

    out = []
    for strategy, rs in {"sv_uamc": rows, **base_rows}.items():
        for r in rs:
            g = gold[r["face_id"]]
            out.append({"face_id": r["face_id"], "subject_id": r.get("subject_id"), "source": source_of[r["face_id"]],
                        "half": half_of[r["face_id"]],
                        "strategy": strategy, "status": r["status"], "abstain_reason": r.get("abstain_reason"),
                        "verdict": r.get("verdict"), "expression": r.get("expression"), "gold_expression": g.expression,
                        "expression_score": face_score(r, "expression"),
                        "expression_loss": face_loss(r, g, "expression"),
                        "expression_confidence": r.get("expression_confidence"),
                        "expression_probs": _floats(r.get("expression_probs")),
                        "consistency_score": r.get("consistency_score"), "verdict_reasons": r.get("verdict_reasons"),
                        "n_samples": r.get("n_samples")})
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(out, infer_schema_length=None).write_parquet(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dev_face_arguments(ap, Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data")))
    ap.add_argument("--targets", default="0.05,0.10,0.20")
    ap.add_argument("--delta", type=float, default=0.1)
    add_checkpoint_arguments(ap)
    ap.add_argument("--rows-out", type=Path, default=None,
                    help="also write every face's outcome per strategy to this Parquet file (for DuckDB/polars)")
    args = ap.parse_args(argv)
    try:
        targets = [float(t) for t in args.targets.split(",") if t.strip()]
    except ValueError:
        targets = []
    if not targets or not all(0 < t < 1 for t in targets) or not 0 < args.delta < 1:
        print(f"bad targets: --targets {args.targets!r} and --delta {args.delta} must be numbers in (0, 1)",
              file=sys.stderr)
        return 2
    split = args.split
    sv = _sv_bench()
    loaded = dev_faces(sv, args.data, args.per_set, split, args.subject_patterns)
    if loaded is None:
        return 2
    faces, gold, used = loaded
    from seke.annotators.offline import build_offline_annotator

    knowledge = knowledge_v1()
    annotator = build_offline_annotator(knowledge, 0, args.expression_checkpoint,
                                        args.expression_checkpoint_weights)  # one instance: the strategies share cached TTA views
    res = run_sampling(faces, sv.prompts_for(faces), annotator, knowledge, SamplingConfig())
    source_of = {f.face_id: f.source for f in faces}
    for r in res.labels:  # as the lake's rows: audit pairs, hence per-source calibration, need it
        r.setdefault("source", source_of[r["face_id"]])
    sources = sorted(set(source_of.values()))
    half_of = {f.face_id: half(f) for f in faces}
    cal_rows = [r for r in res.labels if half_of[r["face_id"]] == 0]
    ev_rows = [r for r in res.labels if half_of[r["face_id"]] == 1]
    ev_faces = [f for f in faces if half_of[f.face_id] == 1]
    base_rows = {name: run_sampling(ev_faces, sv.prompts_for(ev_faces), annotator, knowledge, cfg).labels
                 for name, cfg in sv.strategies(SamplingConfig()).items() if name != "sv_uamc"}
    if args.rows_out:
        print(f"rows: {write_rows(args.rows_out, res.labels, base_rows, gold, source_of, half_of)}")
    out: dict[str, Any] = {}
    at_cov: dict[tuple[str, float], dict[str, float]] = {}
    ceilings: dict[tuple[str, float], dict[str, float]] = {}
    print(f"\n{'gran':<11}{'target':>7}  realized error / coverage on the evaluation half, per source; thresholds fitted on the other half; "
          f"ceiling: the most coverage with error <= target on this half, picked with its labels")
    other_method = next(m for m in METHODS if m != DEFAULT_METHOD)
    other: dict[tuple[str, float], dict[str, tuple[float, float, int]]] = {}
    for g in ("expression", "aus"):
        for t in targets:
            certs, other_certs = {}, {}
            for s in sources:
                sc, ls, _, keys = audit_points([r for r in cal_rows if source_of[r["face_id"]] == s], gold, g)
                certs[s], other_certs[s] = (certify_losses(sc, ls, t, args.delta, bounded=(g == "aus"), source=s,
                                                           granularity=g, method=m, keys=keys)
                                            for m in (DEFAULT_METHOD, other_method))
            out[(g, t)] = realized(ev_rows, gold, certs, source_of, g, sources)
            other[(g, t)] = realized(ev_rows, gold, other_certs, source_of, g, sources)
            ceilings[(g, t)] = {s: ceiling(ev_rows, gold, source_of, g, s, t) for s in sources}
            print(f"{g:<11}{t:>7.2f}  " + "  ".join(f"{s}: {e:.3f}/{c:.3f} (thr {certs[s].threshold if s in certs else '-'}, "
                                                     f"n_cal={certs[s].n_calibration if s in certs else '-'}, "
                                                     f"ceiling {ceilings[(g, t)][s]:.3f})"
                                                     if s != "all" else f"all: {e:.3f}/{c:.3f}"
                                                     for s, (e, c, _) in out[(g, t)].items()))
            print(f"{'':<18}  {other_method} on the same calibration faces: " + "  ".join(
                f"{s}: {e:.3f}/{c:.3f} (thr {other_certs[s].threshold}"
                + (f", start {other_certs[s].procedure['start']})" if "start" in other_certs[s].procedure else ")")
                if s != "all" else f"all: {e:.3f}/{c:.3f}" for s, (e, c, _) in other[(g, t)].items()))
            if g == "expression":
                at_cov[(g, t)] = {name: same_coverage_error(rows, gold, out[(g, t)], source_of, sources)
                                  for name, rows in base_rows.items()}
                print(f"{'':<18}  at the same coverage: " + "  ".join(
                    f"{name} {e:.3f}" for name, e in at_cov[(g, t)].items()))
    nan = float("nan")
    sv_acc = [r for r in ev_rows if r["status"] == "accepted" and gold[r["face_id"]].expression is not None]
    sv_err = 1 - float(np.mean([r["expression"] == gold[r["face_id"]].expression for r in sv_acc])) if sv_acc else float("nan")
    ex_rows = [r for r in ev_rows if gold[r["face_id"]].expression is not None]
    full_acc = metrics.accuracy([gold[r["face_id"]].expression for r in ex_rows], [r.get("expression") or "" for r in ex_rows])
    fer = fer_source(sources)
    fer_rows = [r for r in res.labels if source_of[r["face_id"]] == fer]
    fer_acc = metrics.accuracy([gold[r["face_id"]].expression for r in fer_rows],
                               [r.get("expression") or "" for r in fer_rows]) if fer_rows else float("nan")
    sv_cov = {s: (nan, sum(1 for r in sv_acc if source_of[r["face_id"]] == s)
                  / max(1, sum(1 for r in ex_rows if source_of[r["face_id"]] == s)), 0) for s in sources}
    ss_at_sv = same_coverage_error(base_rows["single_shot"], gold, sv_cov, source_of, sources)
    floor_at_sv = perfect_rejector_error(base_rows["single_shot"], gold, sv_cov, source_of, sources)
    pairs = [p for p in audit_pairs(ev_rows, gold) if p.accepted and p.granularity == "expression"]
    cal_pairs = audit_pairs(cal_rows, gold)
    calibration = fit_calibration(cal_pairs, "isotonic")
    pooled_only = fit_calibration(cal_pairs, "isotonic", min_source_pairs=sys.maxsize)
    ece_acc, ece_cal = eces(pairs, calibration)
    for s in [*sources, "all"]:
        ps = [p for p in pairs if s == "all" or source_of[p.face_id] == s]
        raw, cal = eces(ps, calibration)
        print(f"ECE of SV-UAMC accepted labels, {s}: raw {raw:.3f}, isotonic fitted on the calibration half "
              f"{cal:.3f} (per-source maps: {sorted(calibration.per_source)}), {eces(ps, pooled_only)[1]:.3f} "
              f"(one pooled map) ({len(ps)} labels)")
    print(f"baselines on the evaluation half: SV-UAMC accepted error {sv_err:.3f} "
          f"(coverage {len(sv_acc) / max(1, len(ex_rows)):.3f}; single-shot at the same coverage per source {ss_at_sv:.3f}; "
          f"a verifier rejecting only single-shot's wrong labels at that coverage {floor_at_sv:.3f}), full-coverage accuracy {full_acc:.3f}; "
          f"FER2013 full-coverage accuracy (all its faces) {fer_acc:.3f}; ECE of SV-UAMC accepted labels {ece_acc:.3f} raw, "
          f"{ece_cal:.3f} isotonic; verdicts {res.stats['verdicts']}")
    by_method = {DEFAULT_METHOD: out, other_method: other}
    excess = {m: [e - t for (g, t), per in res_.items() if g == "expression" for s, (e, c, n) in per.items()
                  if s != "all" and not np.isnan(e)] for m, res_ in by_method.items()}
    counts: dict[str, int] = {}
    for f in faces:
        counts[f.source] = counts.get(f.source, 0) + 1
    kv = {"expr_target": 0.10, "expr_realized_error": out[("expression", 0.10)]["all"][0] if ("expression", 0.10) in out else nan,
          "expr_coverage": out[("expression", 0.10)]["all"][1] if ("expression", 0.10) in out else nan,
          "expr_coverage_at_0.20": out[("expression", 0.20)]["all"][1] if ("expression", 0.20) in out else nan,
          "fer_coverage_at_0.20": out[("expression", 0.20)].get(fer, (nan, nan, 0))[1] if ("expression", 0.20) in out else nan,
          **{f"fer_coverage_at_0.20_{SHORT[m]}": res_[("expression", 0.20)].get(fer, (nan, nan, 0))[1]
             if ("expression", 0.20) in res_ else nan for m, res_ in sorted(by_method.items())},
          "fer_ceiling_coverage_at_0.20": ceilings[("expression", 0.20)].get(fer, nan) if ("expression", 0.20) in ceilings else nan,
          "max_expr_excess_over_target": max(excess[DEFAULT_METHOD]) if excess[DEFAULT_METHOD] else nan,
          **{f"max_expr_excess_over_target_{SHORT[m]}": max(ex) if ex else nan for m, ex in sorted(excess.items())},
          "au_realized_error": out[("aus", 0.10)]["all"][0] if ("aus", 0.10) in out else nan,
          "au_coverage": out[("aus", 0.10)]["all"][1] if ("aus", 0.10) in out else nan,
          "accepted_error_ratio": ratio(out, at_cov, "single_shot"),
          "fixed10_error_ratio": ratio(out, at_cov, "fixed_10"),
          "sv_accepted_error": sv_err, "sv_error_ratio_equal_coverage": sv_err / ss_at_sv if ss_at_sv else nan,
          "sv_ratio_floor_rejecting_only": floor_at_sv / ss_at_sv if ss_at_sv else nan, "full_coverage_acc": full_acc, "fer_full_coverage_acc": fer_acc,
          "ece_accepted": ece_acc, "ece_accepted_calibrated": ece_cal}
    print(f"RESULT source={annotator.source} data={data_field(counts, used)} delta={args.delta} method={DEFAULT_METHOD} "
          + " ".join(f"{k}={v:.3f}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
