"""Per-view image evidence for one face crop: expression probabilities, blendshapes, presence.

This is everything the offline annotator sees; the AU mapping, knowledge fusion and
verification work on these numbers only, so calibration scripts can cache them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from seke.vision.expression import expression_probs_fer
from seke.vision.landmarks import LANDMARKS_SUBSET_IDXS, blendshapes, mesh_for_crop

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
    #: Independent evidence for verification (issue 15 item 2); None where not computed.
    geometry: np.ndarray | None = None       # normalised landmark geometry (:func:`geometry_features`)
    fer_aligned: np.ndarray | None = None    # 7, fer model on the landmark-aligned crop (mirror-averaged)
    #: The annotator's optional second expression model (8, EXPRESSIONS order; see
    #: :class:`seke.annotators.offline.ExpressionModel`); None without one.
    second_probs: np.ndarray | None = None


def prepare(img: Image.Image) -> Image.Image:
    """RGB, bounded size; raises ValueError for crops too small to hold a face."""
    if img.width < MIN_SIDE or img.height < MIN_SIDE:
        raise ValueError(f"crop is {img.width}x{img.height} px, smaller than {MIN_SIDE}x{MIN_SIDE}: no face to analyse")
    img = img.convert("RGB") if img.mode != "RGB" else img
    if max(img.size) > MAX_SIDE:
        k = MAX_SIDE / max(img.size)
        img = img.resize((max(MIN_SIDE, round(img.width * k)), max(MIN_SIDE, round(img.height * k))), Image.BILINEAR)
    return img


#: Landmarks of the geometry signal: MediaPipe's blendshape subset without the 10 iris points
#: (brows, eyes, nose, lips, jaw line), 136 points.
GEOMETRY_IDXS: tuple[int, ...] = tuple(i for i in LANDMARKS_SUBSET_IDXS if i < 468)
#: Outer eye corners (FaceMesh indices) that fix roll and scale.
_EYE_R, _EYE_L = 33, 263
#: Side of the aligned crop relative to the landmark box (FER2013-like framing, forehead kept).
ALIGNED_SCALE = 1.15


def _roll(points: np.ndarray) -> float:
    return math.atan2(float(points[_EYE_L, 1] - points[_EYE_R, 1]), float(points[_EYE_L, 0] - points[_EYE_R, 0]))


def geometry_features(points: np.ndarray) -> np.ndarray:
    """Shape of the face, free of position, roll and scale: the :data:`GEOMETRY_IDXS` points
    (x, y) centred on the eye midpoint, rotated so the eye line is horizontal and divided by the
    outer inter-ocular distance (272 numbers)."""
    p = np.asarray(points, np.float64)[:, :2]
    a = _roll(p)
    c, s = math.cos(-a), math.sin(-a)
    mid = 0.5 * (p[_EYE_R] + p[_EYE_L])
    q = p - mid
    q = np.stack([c * q[:, 0] - s * q[:, 1], s * q[:, 0] + c * q[:, 1]], 1)
    iod = max(float(np.hypot(*(p[_EYE_L] - p[_EYE_R]))), 1e-6)
    return (q[list(GEOMETRY_IDXS)] / iod).reshape(-1)


def aligned_crop(img: Image.Image, points: np.ndarray) -> Image.Image:
    """The face re-cut from the landmarks: roll removed, square around the landmark box."""
    p = np.asarray(points, np.float64)[:, :2]
    a = _roll(p)
    cx, cy = float(p[:, 0].mean()), float(p[:, 1].mean())
    c, s = math.cos(-a), math.sin(-a)
    xr = c * (p[:, 0] - cx) - s * (p[:, 1] - cy)
    yr = s * (p[:, 0] - cx) + c * (p[:, 1] - cy)
    side = max(float(xr.max() - xr.min()), float(yr.max() - yr.min()), 4.0) * ALIGNED_SCALE
    mx, my = (xr.max() + xr.min()) / 2, (yr.max() + yr.min()) / 2
    ccx = cx + math.cos(a) * mx - math.sin(a) * my
    ccy = cy + math.sin(a) * mx + math.cos(a) * my
    out = 64
    k = side / out
    ca, sa = math.cos(a), math.sin(a)
    # output (u, v) -> source centre + R(a) @ ((u, v) - out/2) * k
    coeffs = (ca * k, -sa * k, ccx - (ca * k - sa * k) * out / 2, sa * k, ca * k, ccy - (sa * k + ca * k) * out / 2)
    return img.convert("L").transform((out, out), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def view_evidence(img: Image.Image, refine: bool = False, extra: bool = True) -> ViewEvidence:
    """Run the expression model (with mirror averaging), landmarks and blendshapes on a crop;
    with ``extra``, also the geometry and aligned-crop evidence used by verification."""
    img = prepare(img)
    rgb = np.asarray(img)
    p = 0.5 * (expression_probs_fer(img) + expression_probs_fer(img.transpose(Image.FLIP_LEFT_RIGHT)))
    mesh = mesh_for_crop(rgb, refine=refine)
    if not extra:
        return ViewEvidence(p, blendshapes(mesh), mesh.presence)
    crop = aligned_crop(img, mesh.points)
    pa = 0.5 * (expression_probs_fer(crop) + expression_probs_fer(crop.transpose(Image.FLIP_LEFT_RIGHT)))
    return ViewEvidence(p, blendshapes(mesh), mesh.presence, geometry_features(mesh.points), pa)
