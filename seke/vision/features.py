"""Per-view image evidence for one face crop: expression probabilities, blendshapes, presence.

This is everything the offline annotator sees; the AU mapping, knowledge fusion and
verification work on these numbers only, so calibration scripts can cache them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from seke.vision.expression import expression_probs_fer
from seke.vision.landmarks import blendshapes, mesh_for_crop

#: Crops smaller than this (either side) carry no usable face.
MIN_SIDE = 8
#: Longer crops are downscaled to this side before the models (they all work at <= 256 px).
MAX_SIDE = 512


@dataclass(frozen=True)
class ViewEvidence:
    """Model outputs for one view of a face crop."""

    fer_probs: np.ndarray      # 7, FER_CLASSES order (mean of the view and its mirror)
    blendshapes: np.ndarray    # 52, BLENDSHAPE_NAMES order
    presence: float            # FaceMesh face-presence probability


def prepare(img: Image.Image) -> Image.Image:
    """RGB, bounded size; raises ValueError for crops too small to hold a face."""
    if img.width < MIN_SIDE or img.height < MIN_SIDE:
        raise ValueError(f"crop is {img.width}x{img.height} px, smaller than {MIN_SIDE}x{MIN_SIDE}: no face to analyse")
    img = img.convert("RGB") if img.mode != "RGB" else img
    if max(img.size) > MAX_SIDE:
        k = MAX_SIDE / max(img.size)
        img = img.resize((max(MIN_SIDE, round(img.width * k)), max(MIN_SIDE, round(img.height * k))), Image.BILINEAR)
    return img


def view_evidence(img: Image.Image, refine: bool = False) -> ViewEvidence:
    """Run the expression model (with mirror averaging), landmarks and blendshapes on a crop."""
    img = prepare(img)
    rgb = np.asarray(img)
    p = 0.5 * (expression_probs_fer(img) + expression_probs_fer(img.transpose(Image.FLIP_LEFT_RIGHT)))
    mesh = mesh_for_crop(rgb, refine=refine)
    return ViewEvidence(p, blendshapes(mesh), mesh.presence)
