"""A trained checkpoint's expression head as the offline annotator's second expression model.

Kept apart from :mod:`seke.train.annotator` (which imports the FEAB evaluator) so that the
offline annotator can load it without an import circle.
"""

from __future__ import annotations

import threading
from typing import Any

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
