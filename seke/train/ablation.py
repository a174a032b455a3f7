"""The FEID vs human-only ablation: two arms that differ in their labels and in nothing else.

SEKE's claim is that models trained on its instruction data (human expressions plus generated
valence–arousal and AUs with their confidences) beat models trained on the human labels alone.
A comparison only supports that claim when both arms see the same faces, the same recipe, the
same seeds and the same number of optimisation steps. A time budget that cuts each run where the
clock says would let machine load decide the step counts, so here the budget is turned into one
fixed step count before any arm trains (:func:`plan_steps`), and :func:`compare_arms` refuses
two runs that differ in anything but the ablation switches.

torch is imported by the functions that train, so the planning and checking parts work without it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from seke.train.arrays import FaceArrays
from seke.train.config import TrainConfig, recipe_differences

Logger = Callable[[str], None]

ARMS = ("human_only", "feid")


class AblationError(ValueError):
    """The ablation cannot give a meaningful comparison; the message says why, before training."""


def generated_label_counts(arrays: FaceArrays) -> dict[str, int]:
    """Faces whose VA / AU labels are not human (what the FEID arm has and the other lacks)."""
    return {"va": int((arrays.va_w > 0).sum()), "aus": int((arrays.aus_w > 0).sum()),
            "non_human_expression": int(((arrays.expression_w > 0)
                                         & (arrays.expression_origin != "human")).sum())}


def check_feid(arrays: FaceArrays) -> None:
    """Refuse a FEID on which both arms would train on the same labels, or one arm on nothing."""
    human = int(((arrays.expression_w > 0) & (arrays.expression_origin == "human")).sum())
    if human < 2:
        raise AblationError(f"FEID has {human} faces with a human expression label: the human-only arm "
                            "has nothing to train on")
    extra = generated_label_counts(arrays)
    if extra["va"] == 0 and extra["aus"] == 0:
        raise AblationError("FEID carries no valence-arousal or AU labels: both arms would train on the "
                            "same human expressions, so there is nothing to compare")


def common_faces(arrays: FaceArrays) -> FaceArrays:
    """The faces both arms can train on: those with a human expression label. The human-only arm
    cannot use the others, so the FEID arm does not get them either (same faces, same epochs)."""
    return arrays.subset(np.flatnonzero((arrays.expression_w > 0) & (arrays.expression_origin == "human")))


@dataclass(frozen=True)
class StepPlan:
    """How many steps each run gets, and the measurements that decided it."""

    steps: int
    steps_per_epoch: int
    seconds_per_step: float
    eval_seconds: float
    runs: int
    budget_s: float

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch


def plan_steps(*, budget_s: float, spent_s: float, runs: int, seconds_per_step: float,
               eval_seconds: float, n_faces: int, batch_size: int, safety: float = 0.9) -> StepPlan:
    """One step count for every run so that ``runs`` trainings and evaluations fit in what is
    left of ``budget_s``. Raises :class:`AblationError` when that is less than one epoch."""
    steps_per_epoch = max(1, n_faces // min(batch_size, n_faces))
    left = budget_s - spent_s - runs * eval_seconds
    steps = int(safety * left / runs / seconds_per_step) if left > 0 else 0
    if steps < steps_per_epoch:
        need = spent_s + runs * (eval_seconds + steps_per_epoch * seconds_per_step / safety)
        raise AblationError(
            f"time budget {budget_s:.0f}s is too small for one epoch per run: {runs} runs × "
            f"{steps_per_epoch} steps at {seconds_per_step * 1000:.0f} ms/step plus {eval_seconds:.0f}s "
            f"evaluation each need ≥ {need:.0f}s")
    return StepPlan(steps=steps, steps_per_epoch=steps_per_epoch, seconds_per_step=seconds_per_step,
                    eval_seconds=eval_seconds, runs=runs, budget_s=budget_s)


def arm_config(base: TrainConfig, arm: str, seed: int, steps: int, steps_per_epoch: int) -> TrainConfig:
    """The recipe of one arm: fixed steps (no clock), the arm's label switches, the run's seed."""
    cfg = replace(base, name="ablation", seed=seed, max_steps=steps, time_limit_s=0.0,
                  epochs=math.ceil(steps / steps_per_epoch))
    return cfg.ablation() if arm == "human_only" else cfg


def compare_arms(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Refuse to report two run summaries that differ in anything but the labels."""
    diff = recipe_differences(a["recipe"], b["recipe"])
    if diff:
        raise AblationError(f"the arms' recipes differ beyond the label switches: {diff}")
    for key in ("n_train", "steps"):
        if a[key] != b[key]:
            raise AblationError(f"the arms differ in {key}: {a[key]} vs {b[key]}")


def metric(summary: dict[str, Any], eval_name: str, head: str, key: str, tta: bool = True) -> float:
    """One figure of a run summary (``expression_tta`` when TTA ran and ``tta``), nan if absent."""
    ev = summary.get("evaluation", {}).get(eval_name, {})
    block = (ev.get(f"{head}_tta") if tta else None) or ev.get(head) or {}
    return float(block.get(key, float("nan")))


def paired(runs: list[dict[str, dict[str, Any]]], eval_name: str, head: str, key: str) -> dict[str, float]:
    """Mean of each arm over seeds, the mean paired (same seed) FEID − human-only delta and its
    spread (sample standard deviation over seeds; nan with one seed)."""
    a = [metric(r["human_only"], eval_name, head, key) for r in runs]
    b = [metric(r["feid"], eval_name, head, key) for r in runs]
    deltas = [y - x for x, y in zip(a, b)]
    return {"human_only": float(np.mean(a)), "feid": float(np.mean(b)), "delta": float(np.mean(deltas)),
            "spread": float(np.std(deltas, ddof=1)) if len(deltas) > 1 else float("nan")}


def run_ablation(train_set: FaceArrays, base: TrainConfig, *, seeds: list[int], steps: int,
                 evals: dict[str, FaceArrays | None], device: str = "auto", log: Logger = print,
                 checkpoint_root: str | None = None, data_version: str = "",
                 lanes: "ArmLanes | None" = None) -> list[dict[str, dict[str, Any]]]:
    """Train both arms for every seed (same faces, recipe and steps) and score every eval set.

    Both arms train on :func:`common_faces`. With ``lanes`` (an open :class:`ArmLanes`) the two
    arms of a seed train at the same time, one per worker process, so both see the same machine
    load; without, they train one after the other in this process. Returns one ``{"human_only":
    summary, "feid": summary}`` per seed; each summary is
    :func:`seke.train.run.train_and_evaluate`'s plus ``recipe``. Raises :class:`AblationError`
    before reporting anything if the two arms of a seed differ in more than their labels."""
    check_feid(train_set)
    train_set = common_faces(train_set)
    if lanes is not None and not np.array_equal(lanes.face_ids, train_set.face_id):
        raise AblationError("the worker lanes were started on other faces than this ablation trains on")
    steps_per_epoch = max(1, len(train_set) // min(base.batch_size, len(train_set)))
    cfgs = [{arm: arm_config(base, arm, seed, steps, steps_per_epoch) for arm in ARMS} for seed in seeds]
    jobs = [(c[arm].to_dict(), device, data_version, checkpoint_root) for c in cfgs for arm in ARMS]
    if lanes is not None:
        summaries = lanes.map(_lane_train_arm, jobs)  # queued in seed order: a seed's arms run together
    else:
        summaries = [_train_arm(train_set, evals, log, *job) for job in jobs]
    out: list[dict[str, dict[str, Any]]] = []
    for i, seed in enumerate(seeds):
        pair = dict(zip(ARMS, summaries[len(ARMS) * i: len(ARMS) * (i + 1)]))
        for arm in ARMS:
            pair[arm]["arm"], pair[arm]["seed"] = arm, seed
        compare_arms(pair["human_only"], pair["feid"])
        out.append(pair)
    return out


def _train_arm(train_set: FaceArrays, evals: dict[str, FaceArrays | None], log: Logger, recipe: dict[str, Any],
               device: str, data_version: str, checkpoint_root: str | None) -> dict[str, Any]:
    from seke.train.run import train_and_evaluate

    cfg = TrainConfig.from_dict(recipe)
    summary = train_and_evaluate(train_set, cfg, device=device, evals=evals, log=log,
                                 data_version=data_version, checkpoint_root=checkpoint_root)
    summary.pop("_model", None)
    summary["recipe"] = cfg.to_dict()
    return summary


#: What a worker process of :class:`ArmLanes` trains on and scores with, set once when it starts.
_LANE: dict[str, Any] = {}


def _start_lane(threads: int, train_set: FaceArrays, evals: dict[str, FaceArrays | None]) -> None:
    import torch

    torch.set_num_threads(threads)
    pid = os.getpid()
    _LANE.update(train_set=train_set, evals=evals, log=lambda m: print(f"[lane {pid}] {m}", flush=True))


def _lane_train_arm(*job: Any) -> dict[str, Any]:
    return _train_arm(_LANE["train_set"], _LANE["evals"], _LANE["log"], *job)


def probe_costs(train_set: FaceArrays, evals: dict[str, FaceArrays | None], base: TrainConfig, device: str,
                steps: int = 40) -> dict[str, float]:
    """Seconds per training step (over ``steps`` steps) and seconds to score every eval set once
    (plain and, when the recipe uses it, with TTA) — what :func:`plan_steps` sizes runs from."""
    from seke.train.evaluate import evaluate_arrays
    from seke.train.trainer import train

    probe = train(train_set, replace(base, name="probe", max_steps=steps, epochs=1, time_limit_s=0.0),
                  device=device, log=lambda m: None)
    t0 = time.perf_counter()
    for ev in evals.values():
        if ev is not None and len(ev):
            evaluate_arrays(probe.model, ev, probe.device, base, tta=False)
            if base.tta:
                evaluate_arrays(probe.model, ev, probe.device, base, tta=True)
    return {"seconds_per_step": base.batch_size / probe.history[-1]["images_per_s"],
            "eval_seconds": time.perf_counter() - t0}


def _lane_probe(recipe: dict[str, Any], device: str, steps: int) -> dict[str, float]:
    return probe_costs(_LANE["train_set"], _LANE["evals"], TrainConfig.from_dict(recipe), device, steps)


class ArmLanes:
    """Worker processes that train the two arms of a seed side by side, ``threads`` torch
    threads each.

    Why: on 2 cores two single-thread training loops side by side train more images per second
    in all than one two-thread loop (1,085 vs 895 on an AMD EPYC, ``bench/train_fer.py``,
    2026-12-07): the step itself splits well over threads (``bench/train_throughput.py`` times
    it both ways), the rest of the loop does not. Running the arms of a seed together also
    gives both the same machine load. The training faces (:func:`common_faces` of
    ``train_set``) and eval sets go to each worker once, when it starts (spawned, not forked:
    torch's thread pools do not survive a fork)."""

    def __init__(self, train_set: FaceArrays, evals: dict[str, FaceArrays | None], *, lanes: int = 2,
                 threads: int = 1) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if lanes < 2:
            raise ValueError(f"lanes={lanes}: side-by-side training needs at least 2 worker processes")
        faces = common_faces(train_set)
        self.lanes, self.face_ids = lanes, faces.face_id.copy()
        self._pool = ProcessPoolExecutor(max_workers=lanes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_lane, initargs=(threads, faces, evals))

    def rounds(self, runs: int) -> int:
        """How many runs each lane trains one after the other when ``runs`` runs are queued."""
        return math.ceil(runs / self.lanes)

    def map(self, fn: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``fn(*job)`` for every job on the workers (at most ``lanes`` at once), in order."""
        futures = [self._pool.submit(fn, *job) for job in jobs]
        return [f.result() for f in futures]

    def probe(self, base: TrainConfig, device: str, steps: int = 40) -> dict[str, float]:
        """:func:`probe_costs` with every lane busy at once (the slowest lane's figures), i.e.
        what a run costs while other runs train beside it."""
        timings = self.map(_lane_probe, [(base.to_dict(), device, steps)] * self.lanes)
        return {k: max(t[k] for t in timings) for k in timings[0]}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ArmLanes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
