"""Deterministic test-time augmentation: the offline annotator's Monte Carlo samples.

A vision LLM sampled at temperature > 0 gives varied answers; the offline models are
deterministic, so their "samples" are small perturbations of the face crop (crop jitter, flip,
rotation, brightness/contrast), each seeded by (seed, face_id, index) so a rerun reproduces
every sample exactly. Index 0 is always the identity view.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

MAX_SHIFT = 0.03  # fraction of the side
SCALE_RANGE = (0.95, 1.04)
MAX_ROTATION_DEG = 6.0
PHOTOMETRIC_RANGE = (0.85, 1.15)


@dataclass(frozen=True)
class Augmentation:
    """Parameters of one view; ``identity()`` changes nothing."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    rotation_deg: float = 0.0
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0

    @staticmethod
    def identity() -> "Augmentation":
        return Augmentation()

    def is_identity(self) -> bool:
        return self == Augmentation()

    def describe(self) -> str:
        if self.is_identity():
            return "identity"
        return (f"shift=({self.dx:+.3f},{self.dy:+.3f}) scale={self.scale:.3f} rot={self.rotation_deg:+.1f}deg "
                f"flip={int(self.flip)} brightness={self.brightness:.2f} contrast={self.contrast:.2f}")


def augmentation_for(seed: int, face_id: str, index: int) -> Augmentation:
    """The view for sample ``index`` of ``face_id``: identity at 0, seeded random otherwise."""
    if index == 0:
        return Augmentation.identity()
    digest = hashlib.sha256(f"{seed}|{face_id}|{index}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return Augmentation(
        dx=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)), dy=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
        scale=float(rng.uniform(*SCALE_RANGE)), rotation_deg=float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
        flip=bool(rng.random() < 0.5), brightness=float(rng.uniform(*PHOTOMETRIC_RANGE)),
        contrast=float(rng.uniform(*PHOTOMETRIC_RANGE)),
    )


def apply(img: Image.Image, aug: Augmentation) -> Image.Image:
    """The augmented view of ``img`` (same size and mode); edges are replicated, not black."""
    if aug.is_identity():
        return img
    w, h = img.size
    th = math.radians(aug.rotation_deg)
    c, s = math.cos(th) / aug.scale, math.sin(th) / aug.scale
    cx, cy = w / 2.0 + aug.dx * w, h / 2.0 + aug.dy * h
    # output pixel (u, v) -> source: centre + R/scale @ ((u, v) - output centre)
    a, b, d, e = c, -s, s, c
    coeffs = (a, b, cx - a * w / 2.0 - b * h / 2.0, d, e, cy - d * w / 2.0 - e * h / 2.0)
    pad = max(2, int(0.25 * max(w, h)))
    # replicate edges by padding first, so rotated corners are not black wedges
    arr = np.asarray(img)
    padw = ((pad, pad), (pad, pad)) + (((0, 0),) if arr.ndim == 3 else ())
    big = Image.fromarray(np.pad(arr, padw, mode="edge"))
    coeffs = (a, b, coeffs[2] + pad, d, e, coeffs[5] + pad)
    out = big.transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    if aug.flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    if aug.brightness != 1.0:
        out = ImageEnhance.Brightness(out).enhance(aug.brightness)
    if aug.contrast != 1.0:
        out = ImageEnhance.Contrast(out).enhance(aug.contrast)
    return out
