"""A trained checkpoint as an :class:`~seke.annotation.Annotator`, so the FEAB evaluator
(:mod:`seke.evaluate`) scores it exactly like the offline annotator or a VLLM.

    seke evaluate --annotator seke.train.annotator:checkpoint_annotator --checkpoint lake/models/…/config=…

The ``evaluation`` asset takes the same spec (``annotator_spec`` + ``checkpoint``), and the
training assets call :func:`model_annotator` on the model they just trained. One forward pass
per face (with the recipe's flip/shift TTA when it has it): a deterministic model has no
sampling spread, so every requested sample is that answer and verification accepts.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from seke.annotation import FaceItem, Labels
from seke.evaluate import CallableAnnotator
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from seke.train.arrays import decode_grey
from seke.train.config import TrainConfig
from seke.train.expression_model import load_checkpoint_at


def model_annotator(model: Any, cfg: TrainConfig, device: str = "cpu", name: str | None = None
                    ) -> CallableAnnotator:
    """Wrap an in-memory :class:`~seke.train.model.MultiTaskNet` (+ its recipe) as an annotator."""
    from seke.train.evaluate import predict as forward

    def predict(faces: Sequence[FaceItem]) -> list[tuple[Labels, dict[str, float]]]:
        images = np.stack([decode_grey(f.image_png, cfg.image_size) for f in faces]) if faces else \
            np.zeros((0, cfg.image_size, cfg.image_size), np.uint8)
        out = forward(model, images, device, cfg)
        answers = []
        for probs, va, aus in zip(out["expression_probs"], out["va"], out["au_probs"]):
            p = {e: float(x) for e, x in zip(EXPRESSIONS, probs)}
            labels = Labels(expression=EXPRESSIONS[int(np.argmax(probs))], valence=float(va[0]),
                            arousal=float(va[1]), aus={au: float(x) for au, x in zip(AU_CATALOGUE, aus)})
            answers.append((labels, p))
        return answers

    return CallableAnnotator(predict, backend="checkpoint", model=name or cfg.name)


def checkpoint_annotator(knowledge: Any = None, seed: int = 0, checkpoint: str = "",
                         device: str = "cpu", **_: Any) -> CallableAnnotator:
    """Factory for :func:`seke.evaluate.load_annotator`: load ``checkpoint`` and wrap it.
    ``knowledge``/``seed`` are unused."""
    model, cfg, name = load_checkpoint_at(checkpoint, device)
    return model_annotator(model, cfg, device, name=name)
