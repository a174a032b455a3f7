"""Scoring a trained model: predictions, expression / VA / AU metrics, FEAB and fer2013 val.

Metrics follow DESIGN.md §9 and come from :mod:`seke.metrics`, the one implementation FEAB
evaluation, audit mode and the benches use too (macro-F1 over the classes in gold ∪
predictions, per-AU F1 over AUs with a positive in gold or prediction), so a checkpoint's
figures here and in the FEAB comparison table mean the same thing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seke import metrics
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from seke.train.arrays import FaceArrays, from_feid
from seke.train.augment import tta_views
from seke.train.config import TrainConfig
from seke.train.model import MultiTaskNet
from seke.train.tensors import amp_dtype, memory_format, to_device_images


@torch.no_grad()
def predict(model: MultiTaskNet, images: np.ndarray, device: str, cfg: TrainConfig,
            tta: bool | None = None) -> dict[str, np.ndarray]:
    """(N, S, S) uint8 faces → ``expression_probs`` (N, 8), ``va`` (N, 2), ``au_probs`` (N, A)."""
    tta = cfg.tta if tta is None else tta
    model.eval()
    dtype = amp_dtype(cfg, device)
    cuda = device.startswith("cuda")
    outs: dict[str, list[np.ndarray]] = {"expression_probs": [], "va": [], "au_probs": []}
    if len(images) == 0:
        return {"expression_probs": np.zeros((0, cfg.n_expressions), np.float32),
                "va": np.zeros((0, 2), np.float32), "au_probs": np.zeros((0, cfg.n_aus), np.float32)}
    data = to_device_images(images, cfg.image_size, device)
    fmt = memory_format(cfg)
    model.to(memory_format=fmt)  # as in training: a freshly loaded checkpoint is contiguous
    for start in range(0, len(data), cfg.eval_batch_size):
        x = data[start:start + cfg.eval_batch_size].float().div_(255.0)
        views = tta_views(x) if tta else [x]
        # Few faces (the offline annotator scores one view at a time): all views in one forward,
        # not one forward each; per-op overhead, not arithmetic, is what a batch of one costs.
        groups = [torch.cat(views)] if len(views) > 1 and len(x) * len(views) <= cfg.eval_batch_size else views
        acc = {k: 0.0 for k in outs}
        for v in groups:
            with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                o = model(v.contiguous(memory_format=fmt))
            for k, head in (("expression_probs", torch.softmax(o["expression"].float(), 1)),
                            ("va", o["va"].float()), ("au_probs", torch.sigmoid(o["aus"].float()))):
                acc[k] = acc[k] + head.reshape(-1, len(x), head.shape[1]).sum(0)
        for k in outs:
            outs[k].append((acc[k] / len(views)).cpu().numpy())  # type: ignore[union-attr]
    return {k: np.concatenate(v) for k, v in outs.items()}


def expression_metrics(probs: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Accuracy and macro-F1 (:mod:`seke.metrics`) over faces with a label (target ≥ 0)."""
    m = target >= 0
    if not m.any():
        return {"n": 0, "accuracy": float("nan"), "macro_f1": float("nan")}
    pred = [EXPRESSIONS[i] for i in probs[m].argmax(1)]
    gold = [EXPRESSIONS[i] for i in target[m]]
    return {"n": int(m.sum()), "accuracy": metrics.accuracy(gold, pred),
            "macro_f1": metrics.macro_f1(gold, pred, EXPRESSIONS),
            "f1_per_class": metrics.per_class_f1(gold, pred, EXPRESSIONS)}


def va_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    if not mask.any():
        return {"n": 0}
    p, t = pred[mask], target[mask]
    out: dict[str, Any] = {"n": int(mask.sum())}
    for i, name in enumerate(("valence", "arousal")):
        out[f"rmse_{name}"] = metrics.rmse(t[:, i], p[:, i])
        out[f"ccc_{name}"] = metrics.ccc(t[:, i], p[:, i])
        out[f"sign_agreement_{name}"] = metrics.sign_agreement(t[:, i], p[:, i])
    return out


def au_metrics(probs: np.ndarray, target: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Per-AU F1 (:func:`seke.metrics.per_au_f1`) and their mean, on the coded faces."""
    if not mask.any():
        return {"n": 0}
    p, t = probs[mask] >= threshold, target[mask] > 0.5
    aus = list(AU_CATALOGUE)
    true_sets = [[a for a, on in zip(aus, row) if on] for row in t]
    pred_sets = [[a for a, on in zip(aus, row) if on] for row in p]
    per = {f"AU{a}": f for a, f in metrics.per_au_f1(true_sets, pred_sets, aus).items()}
    return {"n": int(mask.sum()), "mean_f1": metrics.mean_au_f1(true_sets, pred_sets, aus),
            "f1_per_au": per}


def evaluate_arrays(model: MultiTaskNet, arrays: FaceArrays, device: str, cfg: TrainConfig,
                    tta: bool | None = None) -> dict[str, Any]:
    """All metrics for the granularities ``arrays`` has labels for."""
    return evaluate_predictions(predict(model, arrays.images, device, cfg, tta=tta), arrays)


def evaluate_predictions(pred: dict[str, np.ndarray], arrays: FaceArrays) -> dict[str, Any]:
    """:func:`evaluate_arrays` on predictions already made (:func:`predict`'s output, or the
    mean of several models' outputs for an ensemble)."""
    target = np.where(arrays.expression_w > 0, arrays.expression, -1)
    return {"faces": len(arrays),
            "expression": expression_metrics(pred["expression_probs"], target),
            "va": va_metrics(pred["va"], arrays.va, arrays.va_w > 0),
            "aus": au_metrics(pred["au_probs"], arrays.aus, arrays.aus_w > 0)}


def feab_arrays(table: Any, image_size: int = 48, human_only: bool = True) -> tuple[FaceArrays, list[dict[str, str]]]:
    """FEAB items (one per face × task, gold labels) folded into one row per face.

    ``human_only`` (default) keeps human gold only, as FEAB scoring does everywhere
    (:mod:`seke.evaluate`): generated-and-verified gold measures agreement, not accuracy.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if hasattr(table, "to_arrow") and not hasattr(table, "column_names"):
        table = table.to_arrow()
    if human_only:
        table = table.filter(pc.invert(pc.fill_null(table.column("gold_flagged"), False)))
    n = table.num_rows
    as_feid = pa.table({
        "face_id": table.column("face_id"), "task": table.column("task"),
        "expression": table.column("gold_expression"), "valence": table.column("gold_valence"),
        "arousal": table.column("gold_arousal"), "aus": table.column("gold_aus"),
        "origin": table.column("gold_origin"), "confidence": pa.array([1.0] * n, pa.float64()),
        "image_png": table.column("image_png")})
    return from_feid(as_feid, image_size)
