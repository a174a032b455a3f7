"""A trained checkpoint's expression head as the offline annotator's second expression model.

Kept apart from :mod:`seke.train.annotator` (which imports the FEAB evaluator) so that the
offline annotator can load it without an import circle.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np
from PIL import Image

from seke.train.arrays import grey_pixels
from seke.train.config import TrainConfig


def load_checkpoint_at(checkpoint: str, device: str = "cpu") -> tuple[Any, TrainConfig, str]:
    """(model, recipe, name) of a checkpoint folder, local or ``s3://`` (same endpoint and
    credentials as an S3 lake); every file is sha256-checked against its manifest."""
    if not checkpoint:
        raise ValueError("a trained model needs checkpoint=<checkpoint folder> (--checkpoint)")
    from seke.train.checkpoint import load_checkpoint

    fs = None
    path = checkpoint
    if checkpoint.startswith("s3://"):
        from seke.lake import Lake

        fs, path = Lake(checkpoint).filesystem()
    model, cfg, metrics = load_checkpoint(path, fs=fs, device=device)
    digest = str(metrics.get("config_digest") or cfg.digest())
    data = str(metrics.get("data_version") or "")
    return model, cfg, f"{cfg.name}@{digest}" + (f" data {data}" if data else "")


class CheckpointExpressionModel:
    """A trained checkpoint's expression head as the offline annotator's second expression
    model (:class:`seke.annotators.offline.ExpressionModel`).

    Why: the fer model's test-time augmentations are correlated with each other, so they cannot
    disagree with the fer model; a network the platform trained on human labels, with another
    architecture, input size and training run, errs differently (issue 15 item 2). Each view
    is scored as the checkpoint was evaluated (grey, resized to its input size, its TTA).
    """

    def __init__(self, checkpoint: str, device: str = "cpu") -> None:
        self.model, self.cfg, name = load_checkpoint_at(checkpoint, device)
        self.device = device
        self.version = f"checkpoint {name}"
        self._lock = threading.Lock()   # one forward at a time: the annotator may be shared by threads

    def probs(self, image: Image.Image) -> np.ndarray:
        from seke.train.evaluate import predict as forward

        pixels = grey_pixels(image, self.cfg.image_size)[None]
        with self._lock:
            out = forward(self.model, pixels, self.device, self.cfg)
        return out["expression_probs"][0].astype(np.float64)


#: Separates the folders of an ensemble in a checkpoint spec (``SEKE_EXPRESSION_CHECKPOINT``).
CHECKPOINT_SEPARATOR = ","


def checkpoint_paths(spec: str) -> list[str]:
    """The checkpoint folders a spec names: one folder, or several separated by
    :data:`CHECKPOINT_SEPARATOR` (an ensemble). Empty names are ignored; a spec naming nothing,
    or one folder twice (which would double its weight silently), is a ValueError."""
    paths = [p.strip() for p in (spec or "").split(CHECKPOINT_SEPARATOR) if p.strip()]
    if not paths:
        raise ValueError(f"a trained model needs a checkpoint folder, not {spec!r}")
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"the checkpoint spec names {', '.join(twice)} more than once")
    return paths


class CheckpointEnsemble:
    """Several checkpoints' expression heads, their probabilities averaged with equal weights.

    Why: runs that differ only in their seed err on partly different faces, so the mean of
    their probabilities can beat each of them. Measured on FER2013 validation with
    ``bench/checkpoint_eval.py A,B`` (2026-12-07): two 50-epoch compact checkpoints, seeds 0
    and 1, 0.6417 and 0.6395 alone, 0.6442 together; a stronger member gains nothing from
    weaker ones (the 0.6551 wide checkpoint with those two: 0.6484), and two wide seeds, 0.6551
    and 0.6620 alone, got 0.6587 together: measure an ensemble against its best member before
    using it. Each member scores a view its own way (its input size, its TTA); the version
    names every member, so a certificate fitted with one ensemble is not reused with another.
    """

    def __init__(self, members: Sequence[CheckpointExpressionModel]) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two checkpoints")
        self.members = list(members)
        self.version = (f"ensemble of {len(self.members)} checkpoints: "
                        + " + ".join(sorted(m.version for m in self.members)))

    def probs(self, image: Image.Image) -> np.ndarray:
        return np.mean([m.probs(image) for m in self.members], axis=0)


def load_expression_model(spec: str, device: str = "cpu") -> "CheckpointExpressionModel | CheckpointEnsemble":
    """The second expression model a checkpoint spec names (:func:`checkpoint_paths`): one
    checkpoint, or the ensemble of several."""
    paths = checkpoint_paths(spec)
    members = [CheckpointExpressionModel(p, device) for p in paths]
    return members[0] if len(members) == 1 else CheckpointEnsemble(members)
