"""Does FEID train better models? The FEID vs human-only ablation on a FEID built by the real jobs.

    .venv/bin/python bench/train_ablation.py [--work .data/ablation] [--time-budget 2400]
        [--seeds 0,1] [--eval DIR ...] [--feid-version V] [--limit N] [--blocks 1,1,1,1]
        [--lanes 2] [--threads 1] [--set FIELD=VALUE ...]

1. **FEID** (built once into ``--work`` and reused; not counted in the budget): FER2013 ``train``
   (human expressions) and the CK+ *dev* subjects (human expressions and FACS AUs) are landed
   as two batches and run through ``refresh_knowledge`` and ``annotate_batch`` on a real Dagster
   instance with the offline annotator, as ``bench/feid_fer2013.py`` does. The other CK+ subjects
   (``--ckplus-eval-share``, split by subject hash) are held out to score AUs on people the FEID
   never saw. The FEID table version read is pinned in the lake (``--feid-version`` reads an
   older one; a version that no longer exists stops the bench before training).
2. **Both arms** train the same recipe (``--recipe``, default ``compact``, the CPU recipe) with
   the same seeds on the same faces (those with a human expression) for the same number of
   steps: (a) ``human_only`` — human expression labels only; (b) ``feid`` — human expressions
   plus the generated valence–arousal and AUs with their confidences. The step count comes from
   ``--time-budget`` (seconds for probe + all training + all evaluation, both arms, all seeds):
   a probe times the step and one evaluation, then every run gets the same fixed step count —
   never a clock cut, so machine load cannot make the arms differ (:mod:`seke.train.ablation`).
   On a CPU the two arms of a seed train side by side in two worker processes of one torch
   thread each (``--lanes 2 --threads 1``, the default there; the probe runs the same way): on
   2 cores that trains more images per second in all than one two-thread run after the other
   (:class:`seke.train.ablation.ArmLanes`). ``--lanes 1`` runs them one after the other.
   ``--set field=value`` changes a recipe field for both arms.
3. **Scores** (one metrics module, :mod:`seke.metrics`): expression accuracy and macro-F1 on
   FER2013 validation and every ``--eval DIR`` (manifest format), with flip/shift TTA as the
   recipe does; AU F1 of the AU head on the held-out CK+ subjects vs their human FACS codes.
   Baselines measured on the same faces: the class prior (commonest expression) of each eval
   set, and calling every AU present on CK+; the human-only arm's AU head is untrained, so its
   AU F1 is a floor too.

Last line: ``RESULT source=… data=… acc_human_only=… acc_feid=… acc_delta=… acc_spread=…
macro_f1_human_only=… macro_f1_feid=… au_f1_ckplus_feid=… au_f1_ckplus_human_only=…
au_f1_all_present=… acc_class_prior=… images_per_s=… images_per_s_per_run=… lanes=… steps=… seeds=…``
(accuracies on FER2013 validation, TTA; ``acc_delta`` is the mean paired FEID − human-only
difference over seeds and ``acc_spread`` its standard deviation over seeds; ``images_per_s`` the
machine's steady training rate, all lanes together).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

FER_BATCH, CK_BATCH = "train", "dev"


def ckplus_is_eval(subject: str, share: float) -> bool:
    """Held-out CK+ subjects: a stable hash of the subject id, so both runs and reruns agree."""
    return int(hashlib.sha256(subject.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def build_feid(work: Path, fer_dir: Path, ck_dir: Path, eval_share: float, limit: int | None) -> float:
    """Land and annotate whichever of the two batches the lake lacks; seconds spent (0 if none)."""
    from feid_fer2013 import land, land_rows, use_work_dir

    use_work_dir(work, [fer_dir, ck_dir])
    from dagster import DagsterInstance

    from pipelines.ingest import run_batch
    from seke.lake import Lake
    from seke.landing import partition_key

    lake = Lake(str(work / "lake"))
    done = {(p.get("source"), p.get("batch")) for p in lake.partitions("raw_faces")} if lake.exists("raw_faces") else set()
    fer_batch = f"{FER_BATCH}-{limit}" if limit else FER_BATCH
    t0 = time.perf_counter()
    todo = []
    if ("fer2013", fer_batch) not in done:
        land(fer_dir, work / "landing", fer_batch, limit)
        todo.append(partition_key("fer2013", fer_batch))
    if ("ckplus", CK_BATCH) not in done:
        with open(ck_dir / "manifest.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = [r for r in reader if not ckplus_is_eval(r["subject_id"], eval_share)]
        land_rows(ck_dir, work / "landing" / "ckplus" / CK_BATCH, rows, columns)
        todo.append(partition_key("ckplus", CK_BATCH))
    for key in todo:
        print(f"building FEID: annotate_batch {key} …", flush=True)
        if not run_batch(DagsterInstance.get(), key, indent="  "):
            raise SystemExit(f"annotate_batch failed for {key}; see the Dagster instance in {work / '.dagster'}")
    return time.perf_counter() - t0 if todo else 0.0


def main(argv: list[str] | None = None) -> int:
    from seke.train.config import with_overrides
    from seke.train.run import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=".data/ablation", help="holds landing/, lake/, .dagster/ and models/ (checkpoints)")
    ap.add_argument("--fer-dir", default=str(shared_data_dir() / "fer2013"))
    ap.add_argument("--ckplus-dir", default=str(shared_data_dir() / "ckplus"))
    ap.add_argument("--ckplus-eval-share", type=float, default=0.5, help="share of CK+ subjects held out")
    ap.add_argument("--eval", action="append", default=[], help="more eval sets (manifest format)")
    ap.add_argument("--feid-version", type=int, default=-1, help="FEID table version (-1: latest)")
    ap.add_argument("--recipe", default="compact", choices=["compact", "full", "tiny"])
    ap.add_argument("--blocks", default="", help="residual blocks per stage, e.g. 1,1,1,1 (the compact recipe "
                    "with a block at 48 px, as before 2026-12-07); default: the recipe's")
    ap.add_argument("--seeds", default="0,1", help="comma-separated; at least 2 for a spread")
    ap.add_argument("--time-budget", type=float, default=2400.0,
                    help="seconds for probe + training + evaluation of both arms and all seeds")
    ap.add_argument("--limit", type=int, default=None, help="first N FER2013 train faces (smoke runs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lanes", type=int, default=0,
                    help="worker processes training the two arms of a seed side by side, --threads torch threads "
                         "each (1: one run after the other in this process, with torch's default threads; "
                         "0, the default: 2 on a CPU, 1 on a GPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per lane (with --lanes ≥ 2)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a recipe field for both arms, e.g. --set aug_erase_p=0 (seke.train.config.TrainConfig)")
    ap.add_argument("--out", default=None, help="summary JSON (default <work>/ablation.json)")
    args = ap.parse_args(argv)
    fer_dir, ck_dir, work = Path(args.fer_dir), Path(args.ckplus_dir), Path(args.work).resolve()
    for d in (fer_dir, ck_dir):
        if not (d / "manifest.csv").is_file():
            print(f"no data: {d}/manifest.csv not found (../shared/data absent?)", file=sys.stderr)
            return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    blocks = _blocks(args.blocks, args.recipe)
    if blocks is None:
        print(f"refused: --blocks {args.blocks!r} is not one non-negative count per stage of the {args.recipe} "
              "recipe with at least one block", file=sys.stderr)
        return 2
    try:
        base = with_overrides(replace(_recipe(args.recipe), **({"blocks": blocks} if blocks else {})), args.set)
    except ValueError as exc:
        print(f"refused: --set {exc}", file=sys.stderr)
        return 2
    if args.lanes < 0 or args.threads < 1:
        print("refused: --lanes must be 0 (auto) or more, --threads at least 1", file=sys.stderr)
        return 2
    build_s = build_feid(work, fer_dir, ck_dir, args.ckplus_eval_share, args.limit)

    import numpy as np
    import torch

    from seke.lake import Lake
    from seke.train import ablation
    from seke.train.arrays import data_version, from_feid, from_manifest

    lake = Lake(str(work / "lake"))
    latest = lake.version("feid")
    version = latest if args.feid_version < 0 else args.feid_version
    try:
        partitions = lake.partition_names("feid", version)
        table = lake.dataset("feid", version).to_table()
    except Exception as exc:  # noqa: BLE001 - never written, or vacuumed away
        print(f"FEID version {version} of {lake.table_uri('feid')} cannot be read (latest {latest}): {exc}",
              file=sys.stderr)
        return 2
    lake.pin("feid", version, "bench/train_ablation.py")
    arrays, errors = from_feid(table, base.image_size)
    try:
        ablation.check_feid(arrays)
    except ablation.AblationError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    faces = ablation.common_faces(arrays)
    origins = {o: int((faces.expression_origin == o).sum()) for o in sorted(set(faces.expression_origin))}
    print(f"FEID version {version} ({', '.join(partitions)}): {len(arrays)} faces, {len(errors)} unreadable; "
          f"both arms train on the {len(faces)} with a human expression (origins {origins}); labels "
          f"{faces.counts()}; FEID build {build_s:.0f}s (not in the budget)")

    evals = {"fer2013_validation": from_manifest(fer_dir, base.image_size, splits=["validation"])[0],
             "ckplus_heldout": from_manifest(ck_dir, base.image_size,
                                             keep=lambda r: ckplus_is_eval(r["subject_id"], args.ckplus_eval_share))[0]}
    for d in args.eval:
        evals[Path(d).name] = from_manifest(d, base.image_size)[0]
    data = ",".join([f"feid[{'+'.join(partitions)}]:{len(faces)}"]
                    + [f"{k}:{len(v)}" for k, v in evals.items()])

    # probe: time steps and one evaluation of every eval set (with every lane busy, as the runs
    # will be), then fix one step count for all runs
    t_budget = time.perf_counter()
    runs = 2 * len(seeds)
    if not args.lanes:
        from seke.train.device import pick_device

        args.lanes = 1 if pick_device(args.device, say=lambda m: None).startswith("cuda") else 2
    lanes = ablation.ArmLanes(faces, evals, lanes=args.lanes, threads=args.threads) if args.lanes > 1 else None
    try:
        costs = lanes.probe(base, args.device) if lanes else ablation.probe_costs(faces, evals, base, args.device)
        rounds = lanes.rounds(runs) if lanes else runs
        try:
            plan = ablation.plan_steps(budget_s=args.time_budget, spent_s=time.perf_counter() - t_budget,
                                       runs=rounds, seconds_per_step=costs["seconds_per_step"],
                                       eval_seconds=costs["eval_seconds"], n_faces=len(faces),
                                       batch_size=base.batch_size)
        except ablation.AblationError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        layout = (f"{args.lanes} lanes × {args.threads} torch threads, {rounds} runs each" if lanes
                  else f"one run at a time, {torch.get_num_threads()} torch threads")
        print(f"plan: {runs} runs × {plan.steps} steps ({plan.epochs:.1f} epochs of {plan.steps_per_epoch} steps, "
              f"{costs['seconds_per_step'] * 1000:.0f} ms/step, {costs['eval_seconds']:.0f}s evaluation each) in a "
              f"{args.time_budget:.0f}s budget; {layout}", flush=True)
        results = ablation.run_ablation(faces, base, seeds=seeds, steps=plan.steps, evals=evals, device=args.device,
                                        checkpoint_root=str(work), lanes=lanes,
                                        data_version=data_version(partitions, faces.face_id))
    finally:
        if lanes:
            lanes.close()
    spent = time.perf_counter() - t_budget
    acc = ablation.paired(results, "fer2013_validation", "expression", "accuracy")
    f1 = ablation.paired(results, "fer2013_validation", "expression", "macro_f1")
    au = ablation.paired(results, "ckplus_heldout", "aus", "mean_f1")
    ips_run = float(np.mean([r[a]["images_per_s"] for r in results for a in ablation.ARMS]))
    ips = ips_run * (min(args.lanes, runs) if lanes else 1)  # the machine's: lanes train side by side
    fer_val = evals["fer2013_validation"]
    prior = float(np.bincount(fer_val.expression[fer_val.expression >= 0]).max() / (fer_val.expression >= 0).sum())
    ck = evals["ckplus_heldout"]
    au_all = _all_present_f1(ck)
    print(f"\n{'eval set / metric':<40} {'human_only':>11} {'feid':>8} {'delta':>8} {'spread':>8}")
    for name in evals:
        for head, key in (("expression", "accuracy"), ("expression", "macro_f1"), ("aus", "mean_f1")):
            p = ablation.paired(results, name, head, key)
            if p["human_only"] == p["human_only"] or p["feid"] == p["feid"]:
                print(f"{name + ' ' + head + ' ' + key:<40} {p['human_only']:>11.4f} {p['feid']:>8.4f} "
                      f"{p['delta']:>+8.4f} {p['spread']:>8.4f}")
    for r in results:
        print("seed {}: ".format(r["feid"]["seed"]) + "  ".join(
            f"{a} acc {ablation.metric(r[a], 'fer2013_validation', 'expression', 'accuracy'):.4f}"
            for a in ablation.ARMS))
    print(f"baselines: FER2013 validation class prior {prior:.4f}; CK+ held-out all-AUs-present F1 {au_all:.4f}")
    print(f"budget: {args.time_budget:.0f}s, used {spent:.0f}s ({runs} runs, steady {ips_run:.0f} images/s per run, "
          f"{ips:.0f} in all)")
    out = Path(args.out) if args.out else work / "ablation.json"
    out.write_text(json.dumps({"feid_version": version, "partitions": partitions, "plan": plan.__dict__,
                               "runs": results, "seconds": spent}, indent=2, default=str))
    print(f"RESULT source={os.environ.get('SEKE_ANNOTATOR', 'offline')} data={data} acc_human_only={acc['human_only']:.4f} acc_feid={acc['feid']:.4f} "
          f"acc_delta={acc['delta']:+.4f} acc_spread={acc['spread']:.4f} "
          f"macro_f1_human_only={f1['human_only']:.4f} macro_f1_feid={f1['feid']:.4f} "
          f"au_f1_ckplus_feid={au['feid']:.4f} au_f1_ckplus_human_only={au['human_only']:.4f} "
          f"au_f1_all_present={au_all:.4f} acc_class_prior={prior:.4f} images_per_s={ips:.0f} images_per_s_per_run={ips_run:.0f} lanes={args.lanes if lanes else 1} "
          f"steps={plan.steps} seeds={len(seeds)} seconds={spent:.0f}")
    return 0


def _recipe(name: str):
    """The named recipe's :class:`~seke.train.config.TrainConfig` (``compact``, ``full``, ``tiny``)."""
    from seke.train.config import TrainConfig

    return {"compact": TrainConfig.compact, "full": TrainConfig, "tiny": TrainConfig.tiny}[name]()


def _blocks(spec: str, recipe: str) -> tuple[int, ...] | None:
    """``--blocks`` as a tuple (``()`` when not given), or None when it cannot fit the recipe —
    checked before the FEID build, so a typo costs no annotation time."""
    if not spec:
        return ()
    stages = len(_recipe(recipe).widths)
    try:
        blocks = tuple(int(b) for b in spec.split(","))
    except ValueError:
        return None
    return blocks if len(blocks) == stages and min(blocks) >= 0 and any(blocks) else None


def _all_present_f1(arrays) -> float:
    """Mean per-AU F1 of calling every AU present on the coded faces (the AU reference)."""
    import numpy as np

    from seke.train.evaluate import au_metrics

    mask = arrays.aus_w > 0
    return float(au_metrics(np.ones_like(arrays.aus), arrays.aus, mask).get("mean_f1", float("nan")))


if __name__ == "__main__":
    raise SystemExit(main())
