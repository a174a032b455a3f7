"""One training run end to end: train → evaluate → checkpoint, shared by the Dagster asset and
``bench/train_fer.py`` (which runs on a bare GPU machine: torch, numpy, pyarrow; no Dagster).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seke.train.arrays import FaceArrays, drop_overlap, from_manifest
from seke.train.config import TrainConfig

Logger = Callable[[str], None]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository root (the dev-data resource passes another
    folder explicitly when ``SEKE_SHARED_DATA`` says so)."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def load_fer_validation(image_size: int = 48, folder: str | Path | None = None) -> FaceArrays | None:
    """The fer2013 ``validation`` split with its human labels, or None when the data is absent."""
    folder = Path(folder) if folder is not None else shared_data_dir() / "fer2013"
    if not (folder / "manifest.csv").is_file():
        return None
    arrays, _ = from_manifest(folder, image_size, splits=["validation"])
    return arrays


def load_ckplus(image_size: int = 48, folder: str | Path | None = None) -> FaceArrays | None:
    """CK+ with human expression and FACS AU codes (all 750 faces), or None when absent.

    Why it is an evaluation set for models trained on FEID: FER2013 has no AU codes, so a FEID
    built from it carries generated AUs only; CK+ measures whether those transfer to AUs coded
    by certified FACS coders on other people."""
    folder = Path(folder) if folder is not None else shared_data_dir() / "ckplus"
    if not (folder / "manifest.csv").is_file():
        return None
    arrays, _ = from_manifest(folder, image_size)
    return arrays


def train_and_evaluate(train_set: FaceArrays, cfg: TrainConfig, *, device: str = "auto",
                       evals: dict[str, FaceArrays | None] | None = None, log: Logger = print,
                       data_version: str = "", partitions: list[str] | None = None,
                       checkpoint_root: str | None = None, fs: Any = None,
                       val_for_history: str | None = None) -> dict[str, Any]:
    """Train ``cfg`` on ``train_set``, score every eval set (TTA and plain), save a checkpoint.

    Eval sets that share a face's pixels with the training set are removed from the training
    set first (leak guard). Returns a summary: checkpoint path, metrics per eval set, history,
    throughput, device facts. Eval sets that are None are reported as skipped.
    """
    from seke.train.checkpoint import checkpoint_dir, save_checkpoint, write_latest
    from seke.train.evaluate import evaluate_arrays
    from seke.train.trainer import train

    evals = evals or {}
    removed: dict[str, int] = {}
    for name, ev in evals.items():
        if ev is not None:
            train_set, removed[name] = drop_overlap(train_set, ev)
            if removed[name]:
                log(f"leak guard: dropped {removed[name]} training faces identical to {name} faces")
    t0 = time.perf_counter()
    result = train(train_set, cfg, device=device, log=log,
                   val=evals.get(val_for_history) if val_for_history else None)
    evaluation: dict[str, Any] = {}
    for name, ev in evals.items():
        if ev is None or len(ev) == 0:
            evaluation[name] = {"skipped": "data absent"}
            log(f"evaluation on {name}: skipped (data absent)")
            continue
        scores = evaluate_arrays(result.model, ev, result.device, cfg, tta=False)
        if cfg.tta:
            tta = evaluate_arrays(result.model, ev, result.device, cfg, tta=True)
            scores["expression_tta"] = tta["expression"]
        evaluation[name] = scores
        acc = scores["expression"].get("accuracy")
        log(f"evaluation on {name}: {scores['faces']} faces, expression accuracy {acc:.4f}"
            + (f" (TTA {scores['expression_tta']['accuracy']:.4f})" if "expression_tta" in scores else ""))
    summary: dict[str, Any] = {
        "name": cfg.name, "config_digest": cfg.digest(), "data_version": data_version,
        "partitions": sorted(partitions or []), "n_train": result.n_train,
        "label_counts": result.label_counts, "leak_guard_removed": removed,
        "epochs_run": result.epochs_run, "steps": result.steps,
        "train_seconds": round(result.seconds, 2), "images_per_s": round(result.images_per_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 2), "device": result.info,
        "history": result.history, "evaluation": evaluation,
    }
    if checkpoint_root is not None:
        path = checkpoint_dir(checkpoint_root, cfg.name, data_version or "unversioned", cfg.digest())
        summary["checkpoint"] = save_checkpoint(result.model, cfg, summary, path, fs=fs)
        write_latest(checkpoint_root, cfg.name, summary["checkpoint"], fs=fs,
                     extra={"data_version": data_version, "config_digest": cfg.digest()})
        log(f"checkpoint: {summary['checkpoint']}")
    summary["_model"] = result.model
    return summary


def headline(summary: dict[str, Any], eval_name: str = "fer2013_validation") -> float:
    """The fer2013 validation accuracy the RESULT line reports (TTA when it was run), or nan."""
    ev = summary.get("evaluation", {}).get(eval_name, {})
    block = ev.get("expression_tta") or ev.get("expression") or {}
    return float(block.get("accuracy", np.nan))
