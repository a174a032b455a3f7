"""Efficiency benchmark of SV-UAMC against single-shot and fixed-N self-consistency (issue 4).

    PYTHONPATH=. python bench/sv_uamc.py [--data DIR] [--split S] [--per-set N]
    PYTHONPATH=. python bench/sv_uamc.py --simulated [--faces N] [--tune]

Two annotators, every strategy on the same faces and the same code path
(:func:`seke.sv_uamc.run_sampling`). By default the bench measures **real faces** with the
offline annotator; asked for real data it cannot find (no folder, no annotator, no face of the
asked split), it exits 2 and never falls back. ``--simulated`` measures the simulated annotator
instead. The RESULT line always says which: ``source=offline|simulated``, ``data=`` (sets and
face counts, or the simulated set), the headline ratios and the baseline figures they come from.

* **simulated** (:class:`seke.annotators.simulated.SimulatedAnnotator`): synthetic faces with a
  full ground truth and a named noise model; all three granularities are generated (audit of
  everything), so expression accuracy, AU F1 and VA are all measured. Strategies see common
  random numbers (sample *i* of a face is the same draw under every strategy).
* **offline** (``seke.annotators.offline.OfflineAnnotator``): the sets of ``--data`` (one set
  folder with a ``manifest.csv``, or a folder of such sets; default ``../shared/data``: FER2013
  rows of ``--split``, default ``auto``: ``validation`` where a set has it, else its splits
  other than ``train``; CK+ and wild as shipped, they have no split column), in audit mode with every human label hidden,
  scored against the hidden labels.

Per strategy the table shows model calls per face (samples + verification calls), expression
accuracy over all faces (the final candidate, abstained ones included), error among accepted
labels, share abstained, AU mean F1, valence CCC and the ECE (15 bins) of the expression
confidence on accepted faces.

Calibration: per strategy, temperature and isotonic maps are fitted on the simulated dev seed
and applied on the evaluation seed (``ece_temp``, ``ece_isot``).

Headline (last line), on the offline dev data (default) or the simulated evaluation set
(``--simulated``, regime ``default``):
``calls_ratio`` = calls/face of SV-UAMC ÷ fixed-10; ``acc_delta`` = accuracy of SV-UAMC −
fixed-10 in points; ``accepted_error_ratio`` = expression error among SV-UAMC's accepted labels
÷ single-shot's error *at equal coverage* (single-shot's most confident faces, as many as
SV-UAMC accepted: what a user would get by thresholding single-shot's own confidence instead);
``accepted_error_ratio_full`` is the same over all of single-shot's labels (the earlier
figure, which credits SV-UAMC for merely abstaining); ``abstain_rate`` = SV-UAMC's abstained share.

``--tune`` sweeps k and the thresholds on a *separate* simulated dev seed and prints the
frontier; the defaults in :class:`seke.sv_uamc.SamplingConfig` came from it, never from the
evaluation seed or from any test split.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke import metrics  # noqa: E402
from seke.annotation import FaceItem, Labels, PromptSpec  # noqa: E402
from seke.annotators.simulated import NoiseModel, SimulatedAnnotator, simulate_faces  # noqa: E402
from seke.audit import audit_pairs  # noqa: E402
from seke.bench_data import (DEFAULT_SPLIT, DEV_SUBJECT_PATTERNS, NoData, add_checkpoint_arguments, add_dev_face_arguments,  # noqa: E402
                             data_field, labelled_sets, resolve_split, select_split)
from seke.calibration import Calibration, fit_calibration  # noqa: E402
from seke.knowledge import Knowledge, knowledge_v1  # noqa: E402
from seke.sv_uamc import SamplingConfig, run_sampling  # noqa: E402
from seke.taxonomy import AU_CATALOGUE  # noqa: E402

DEV_SEED, EVAL_SEED = 11, 23


def strategies(base: SamplingConfig) -> dict[str, SamplingConfig]:
    return {"single_shot": SamplingConfig.baseline("single_shot"),
            "fixed_10": SamplingConfig.baseline("fixed_n", fixed_n=10, k=base.k),
            "sv_uamc": base}


def prompts_for(faces: Sequence[FaceItem]) -> dict[str, PromptSpec]:
    return {f.face_id: PromptSpec.make("bench-v1", [{"role": "user", "content": "label the face"}],
                                       f.known.missing_granularities()) for f in faces}


def score(rows: Sequence[Mapping[str, Any]], gold: Mapping[str, Labels], calls: int) -> dict[str, float]:
    """Label quality of one run against the gold labels (see the module docstring)."""
    n = len(rows)
    ex = [r for r in rows if gold[r["face_id"]].expression is not None]
    acc_rows = [r for r in ex if r["status"] == "accepted"]

    def acc(rs: Sequence[Mapping[str, Any]]) -> float:
        # a face without a candidate counts as wrong (never dropped): "" matches no gold
        return metrics.accuracy([gold[r["face_id"]].expression for r in rs],
                                [r.get("expression") or "" for r in rs]) if rs else math.nan
    au = [r for r in rows if gold[r["face_id"]].aus is not None]
    va = [r for r in rows if gold[r["face_id"]].valence is not None]
    pairs = [p for p in audit_pairs(rows, gold) if p.accepted and p.granularity == "expression"]
    return {
        "faces": n, "calls_per_face": calls / n if n else math.nan,
        "accuracy": acc(ex),
        "accepted_error": 1 - acc(acc_rows),
        "abstain": sum(r["status"] == "abstained" for r in rows) / n if n else math.nan,
        "expr_coverage": len(acc_rows) / len(ex) if ex else math.nan,
        "au_f1": metrics.mean_au_f1(
            [sorted(a for a, p in gold[r["face_id"]].aus.items() if p >= 0.5) for r in au],
            [r.get("aus") if r.get("aus") is not None else [] for r in au], AU_CATALOGUE) if au else math.nan,
        "valence_ccc": metrics.ccc([gold[r["face_id"]].valence for r in va], [r.get("valence") for r in va])
        if va else math.nan,
        "ece": metrics.ece([p.confidence for p in pairs], [p.correct for p in pairs]) if pairs else math.nan,
    }


def run_strategies(faces, gold, make_annotator: Callable[[], Any], knowledge: Knowledge,
                   configs: Mapping[str, SamplingConfig],
                   calibrations: Mapping[str, Mapping[str, Calibration]] | None = None) -> dict[str, dict[str, Any]]:
    """Run every strategy on the same faces; with ``calibrations``, also score calibrated ECE."""
    out = {}
    prompts = prompts_for(faces)
    source_of = {f.face_id: f.source for f in faces}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        res = run_sampling(faces, prompts, make_annotator(), knowledge, cfg)
        for r in res.labels:  # as the lake's rows: per-source calibration needs it
            r.setdefault("source", source_of[r["face_id"]])
        out[name] = score(res.labels, gold, res.stats["calls"])
        out[name]["seconds"] = time.perf_counter() - t0
        out[name]["stop_reasons"] = res.stats["stop_reasons"]
        out[name]["verdicts"] = res.stats["verdicts"]
        out[name]["pairs"] = audit_pairs(res.labels, gold)
        ps = [p for p in out[name]["pairs"] if p.accepted and p.granularity == "expression"]
        for method, cal in ((calibrations or {}).get(name) or {}).items():
            out[name][f"ece_{method[:4]}"] = metrics.ece([cal.apply(p.confidence, "expression", p.source) for p in ps],
                                                         [p.correct for p in ps]) if ps else math.nan
    return out


def print_table(title: str, table: Mapping[str, Mapping[str, Any]]) -> None:
    print(f"\n## {title}")
    cols = [c for c in ["calls_per_face", "accuracy", "accepted_error", "abstain", "au_f1", "valence_ccc", "ece",
                        "ece_temp", "ece_isot", "seconds"] if all(c in m for m in table.values())]
    print(f"{'strategy':<12}" + "".join(f"{c:>15}" for c in cols))
    for name, m in table.items():
        print(f"{name:<12}" + "".join(f"{m[c]:>15.3f}" for c in cols))
    for name, m in table.items():
        print(f"  {name}: stop={m['stop_reasons']} verdicts={m['verdicts']}")


def error_at_coverage(pairs: Sequence[Any], coverage: float) -> float:
    """Expression error among the ``coverage`` share of faces with the highest confidence
    (every expression pair, accepted or not: the ranking a confidence threshold would make)."""
    ps = [p for p in pairs if p.granularity == "expression"]
    kept = metrics.most_confident([p.confidence for p in ps], [float(p.correct) for p in ps], coverage)
    return 1.0 - sum(kept) / len(kept) if kept else math.nan


def headline(table: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    sv, fx, ss = table["sv_uamc"], table["fixed_10"], table["single_shot"]
    coverage = sv["expr_coverage"]
    ss_at = error_at_coverage(ss["pairs"], coverage)
    return {"calls_ratio": sv["calls_per_face"] / fx["calls_per_face"],
            "acc_delta": 100 * (sv["accuracy"] - fx["accuracy"]),
            "accepted_error_ratio": sv["accepted_error"] / ss_at if ss_at else math.nan,
            "accepted_error_ratio_full": sv["accepted_error"] / ss["accepted_error"],
            "single_shot_error_at_sv_coverage": ss_at,
            "abstain_rate": sv["abstain"]}


# ---- simulated -----------------------------------------------------------------------------

#: Noise regimes of the simulated annotator. ``default`` was fixed before any run (single-shot
#: accuracy near 0.55 and fixed-10 near 0.72, as zero-shot VLLMs on 8-class in-the-wild data);
#: the others move only the per-sample noise, i.e. how self-consistent the annotator is at T > 0.
REGIMES: dict[str, NoiseModel] = {
    "consistent": NoiseModel(sample_noise_base=0.03, sample_noise_slope=0.25),
    "default": NoiseModel(),
    "noisy": NoiseModel(sample_noise_base=0.15, sample_noise_slope=0.60),
}


def simulated_set(n: int, seed: int, knowledge: Knowledge, noise: NoiseModel = NoiseModel()):
    faces, truth = simulate_faces(n, knowledge, seed=seed)  # nothing known: audit of everything
    return faces, truth, (lambda: SimulatedAnnotator(truth, noise, seed=seed, knowledge=knowledge))


def tune(n: int, knowledge: Knowledge, regime: str) -> None:
    """Sweep k and thresholds on the dev seed; compare each run with fixed-10 on the same faces."""
    faces, truth, make = simulated_set(n, DEV_SEED, knowledge, REGIMES[regime])
    ref = run_strategies(faces, truth, make, knowledge, {k: v for k, v in strategies(SamplingConfig()).items()
                                                          if k != "sv_uamc"})
    print_table(f"tuning reference (simulated dev seed {DEV_SEED}, regime {regime}, {n} faces)", ref)
    print(f"\n{'k':>3}{'t_expr':>8}{'t_va':>7}{'t_aus':>7}{'calls':>8}{'ratio':>8}{'acc_d':>8}{'err_r':>8}{'abst':>7}")
    grid = itertools.product([2, 3], [0.10, 0.20, 0.30, 0.35], [0.15, 0.25], [0.15, 0.30, 0.40])
    for k, te, tv, ta in grid:
        cfg = SamplingConfig(k=k, threshold_expression=te, threshold_va=tv, threshold_aus=ta)
        m = run_strategies(faces, truth, make, knowledge, {"sv_uamc": cfg})["sv_uamc"]
        ratio = m["calls_per_face"] / ref["fixed_10"]["calls_per_face"]
        d = 100 * (m["accuracy"] - ref["fixed_10"]["accuracy"])
        er = m["accepted_error"] / ref["single_shot"]["accepted_error"]
        print(f"{k:>3}{te:>8.2f}{tv:>7.2f}{ta:>7.2f}{m['calls_per_face']:>8.2f}{ratio:>8.3f}{d:>8.2f}{er:>8.3f}"
              f"{m['abstain']:>7.3f}", flush=True)


# ---- offline on dev splits -------------------------------------------------------------------

#: The dev sets, measured first (in this order) when ``--data`` is a folder of sets; any other
#: set folder there (``manifest.csv`` inside) is measured too, and ``--data`` may name one set.
#: Rows are cut to ``--split`` where a set has split labels.
DEV_SETS: tuple[str, ...] = ("fer2013", "ckplus", "wild")


def offline_dev_faces(data: Path, per_set: int, split: str | None = DEFAULT_SPLIT,
                      subject_patterns: Mapping[str, str] | None = None
                      ) -> tuple[list[FaceItem], dict[str, Labels], list[str], dict[str, str | None]]:
    """Audit-mode dev faces: every human label hidden (the annotator sees none), kept as gold.

    ``per_set`` files per set, chosen by a hash of the file name (stable, unbiased by order).
    A set with split labels but no row of ``split`` raises :class:`NoData`. Also returns the
    split each set was cut to (None: used whole). ``subject_patterns`` (default
    :data:`DEV_SUBJECT_PATTERNS`) read subjects from file names in sets whose manifest names none.
    """
    import hashlib

    from seke.faces import default_detector, ingest_folder, read_manifest
    from seke.manifest import parse_subject_patterns, subject_pattern

    if subject_patterns is None:
        subject_patterns = parse_subject_patterns(DEV_SUBJECT_PATTERNS)

    faces, gold, notes, used = [], {}, [], {}
    sets = labelled_sets(data, DEV_SETS)
    notes += [f"{name}: no manifest under {data / name}, skipped" for name in DEV_SETS
              if not (data / "manifest.csv").is_file() and name not in dict(sets)]
    for name, folder in sets:
        manifest = read_manifest(folder)
        rows = select_split(manifest.items(), lambda kv: kv[1].split, split, name)
        used[name] = resolve_split((k.split for k in manifest.values()), split)
        names = sorted((n for n, k in rows if k.expression is not None),
                       key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:per_set]
        pattern = subject_pattern(subject_patterns[name]) if subject_patterns.get(name) else None
        crops, rejected = ingest_folder(folder, default_detector(), files=[folder / n for n in names],
                                        subject_pattern=pattern)
        subjects = len({c.known.subject_id for c in crops if c.known.subject_id})
        named = f" ({subjects} subjects{', from file names' if pattern else ''})" if subjects else ""
        notes.append(f"{name}: {len(crops)} faces{named}, {len(rejected)} rejected at ingestion")
        for c in crops:
            k = c.known
            gold[c.face_id] = Labels(k.expression, k.valence if k.arousal is not None else None,
                                     k.arousal if k.valence is not None else None,
                                     None if k.aus is None else {a: 1.0 for a in k.aus})
            faces.append(FaceItem(c.face_id, c.crop_png, Labels(), source=name, subject_id=k.subject_id))
    return faces, gold, notes, used


def offline_benchmark(data: Path, per_set: int, knowledge: Knowledge, base: SamplingConfig,
                      split: str | None = DEFAULT_SPLIT, expression_checkpoint: str | None = None,
                      checkpoint_weights: Mapping[str, float] | None = None,
                      subject_patterns: Mapping[str, str] | None = None) -> tuple[dict[str, dict[str, Any]], str, str]:
    """Strategies with the offline annotator on dev data, the RESULT ``data=`` value (sets,
    splits, faces measured) and ``source=`` value; raises :class:`NoData` when it cannot
    measure any real face."""
    try:
        from seke.annotators.offline import build_offline_annotator
    except ImportError as exc:
        raise NoData(f"offline annotator not available ({exc})") from exc
    if not data.is_dir():
        raise NoData(f"no data folder at {data}")
    faces, gold, notes, used = offline_dev_faces(data, per_set, split, subject_patterns)
    for n in notes:
        print(f"  {n}")
    if not faces:
        raise NoData("no dev faces found: " + "; ".join(notes))
    counts: dict[str, int] = {}
    for f in faces:
        counts[f.source] = counts.get(f.source, 0) + 1
    # One instance for every strategy: sample i of a face is the same TTA view (cached), so the
    # strategies see common random numbers and fixed-10's views are computed once.
    annotator = build_offline_annotator(knowledge, 0, expression_checkpoint, checkpoint_weights)
    return (run_strategies(faces, gold, lambda: annotator, knowledge, strategies(base)), data_field(counts, used),
            annotator.source)


def result_line(table: Mapping[str, Mapping[str, float]], source: str, data: str) -> str:
    """The RESULT line: where the figures come from, the headline and its baseline figures."""
    sv, fx, ss = table["sv_uamc"], table["fixed_10"], table["single_shot"]
    kv = {**headline(table),
          "sv_calls": sv["calls_per_face"], "fixed10_calls": fx["calls_per_face"],
          "sv_acc": sv["accuracy"], "fixed10_acc": fx["accuracy"], "single_shot_acc": ss["accuracy"],
          "sv_accepted_error": sv["accepted_error"], "single_shot_accepted_error": ss["accepted_error"]}
    return f"RESULT source={source} data={data} " + " ".join(f"{k}={v:.3f}" for k, v in kv.items())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dev_face_arguments(ap, Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data")),
                           per_set=100, per_set_help="offline dev faces per data set")
    ap.add_argument("--simulated", action="store_true",
                    help="measure the simulated annotator instead of real faces (RESULT source=simulated)")
    ap.add_argument("--no-offline", action="store_true", help="same as --simulated")
    ap.add_argument("--faces", type=int, default=1000, help="simulated faces (dev and eval sets each)")
    add_checkpoint_arguments(ap)
    ap.add_argument("--tune", action="store_true", help="sweep k/thresholds on the simulated dev seed")
    ap.add_argument("--regime", default="default", choices=sorted(REGIMES), help="noise regime for --tune")
    ap.add_argument("--regimes", default="default,consistent,noisy", help="simulated regimes to report")
    args = ap.parse_args(argv)
    knowledge = knowledge_v1()
    if args.tune:
        tune(args.faces, knowledge, args.regime)
        return 0
    base = SamplingConfig()
    print(f"SV-UAMC config: {base}")
    if not (args.simulated or args.no_offline):
        try:
            off, data, source = offline_benchmark(args.data, args.per_set, knowledge, base, args.split,
                                                  args.expression_checkpoint, args.expression_checkpoint_weights,
                                                  args.subject_patterns)
        except NoData as exc:
            print(f"no real data: {exc} (use --simulated to measure the simulated annotator)", file=sys.stderr)
            return 2
        print_table(f"offline annotator, dev faces of {args.data} (audit mode, all labels hidden)", off)
        print(result_line(off, source, data))
        return 0
    tables = {}
    for regime in [r for r in args.regimes.split(",") if r]:
        noise = REGIMES[regime]
        # calibrations (temperature, isotonic) fitted per strategy on the dev seed, applied on the eval seed
        dev_faces, dev_truth, dev_make = simulated_set(args.faces, DEV_SEED, knowledge, noise)
        dev = run_strategies(dev_faces, dev_truth, dev_make, knowledge, strategies(base))
        cals = {name: {method: fit_calibration(m["pairs"], method) for method in ("temperature", "isotonic")}
                for name, m in dev.items()}
        faces, truth, make = simulated_set(args.faces, EVAL_SEED, knowledge, noise)
        tables[regime] = run_strategies(faces, truth, make, knowledge, strategies(base), cals)
        print_table(f"simulated annotator, regime {regime}, eval seed {EVAL_SEED}, {args.faces} faces, "
                    f"all granularities generated", tables[regime])
        print(f"headline ({regime}): " + " ".join(f"{k}={v:.3f}" for k, v in headline(tables[regime]).items()))
    if not tables:
        print("no regime to measure", file=sys.stderr)
        return 2
    regime = "default" if "default" in tables else next(iter(tables))
    print(result_line(tables[regime], "simulated", f"simulated-{regime}:{args.faces}@seed{EVAL_SEED}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
