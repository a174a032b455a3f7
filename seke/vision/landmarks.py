"""FaceMesh-v2 landmarks (478 points) and the 52 ARKit blendshapes, on LiteRT.

Region of interest as in MediaPipe's ``face_landmarker_graph.cc``: the detection box scaled by
1.5, squared, rotated so the eye line is horizontal (keypoints 0/1), resampled to 256x256 RGB
in [0, 1]. The landmark model answers in ROI pixels; we map points back to image pixels. The
blendshape model takes the 146-landmark subset ``kLandmarksSubsetIdxs`` from
``face_blendshapes_graph.cc`` as (x, y) image pixels (it normalises scale itself).

Pre-cropped faces (FER/CK+ 48x48, ``seke.faces`` crops) need no detector: :func:`mesh_for_crop`
treats the crop as the face box, then refines the ROI once from the first pass's landmarks
(the tracking step of MediaPipe), which matters for crops framed differently from BlazeFace boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from seke.vision.face_types import FaceDetection
from seke.vision.runtime import runner

INPUT_SIZE = 256
ROI_SCALE = 1.5

#: face_blendshapes_graph.cc :: kLandmarksSubsetIdxs (MediaPipe v0.10, Apache-2.0).
LANDMARKS_SUBSET_IDXS: tuple[int, ...] = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54,
    55, 58, 61, 63, 65, 66, 67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95,
    103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152,
    153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178,
    181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282,
    283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314,
    317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374,
    375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397,
    398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474,
    475, 476, 477,
)

#: face_blendshapes_graph.cc :: kBlendshapeNames, in model output order (ARKit names).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)


@dataclass(frozen=True)
class FaceMesh:
    """478 landmarks (x, y in image pixels; z in ROI pixel units) and the face-presence score."""

    points: np.ndarray
    presence: float
    roi: tuple[float, float, float, float]  # centre x, centre y, side, angle (radians)


def _sample_roi(rgb: np.ndarray, cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """256x256 float RGB in [0,1]: the rotated square ROI, resampled bilinearly (edges replicated)."""
    c, s = math.cos(angle), math.sin(angle)
    k = side / INPUT_SIZE
    # output (u, v) -> source: centre + R(angle) @ ((u, v) - 128) * k   (PIL uses pixel corners)
    a, b = c * k, -s * k
    d, e = s * k, c * k
    off_u = off_v = -INPUT_SIZE / 2.0
    cx_src = cx + a * off_u + b * off_v
    cy_src = cy + d * off_u + e * off_v
    img = Image.fromarray(rgb)
    out = img.transform((INPUT_SIZE, INPUT_SIZE), Image.AFFINE, (a, b, cx_src, d, e, cy_src),
                        resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out, dtype=np.float32) / 255.0


def _run_mesh(rgb: np.ndarray, cx: float, cy: float, side: float, angle: float) -> FaceMesh:
    x = _sample_roi(rgb, cx, cy, side, angle)
    outs = runner("face_landmarks").run(x[None])
    pts = outs[0].reshape(478, 3).astype(np.float64)
    presence = float(1.0 / (1.0 + math.exp(-float(outs[1].reshape(-1)[0]))))
    c, s = math.cos(angle), math.sin(angle)
    k = side / INPUT_SIZE
    u, v = pts[:, 0] - INPUT_SIZE / 2.0, pts[:, 1] - INPUT_SIZE / 2.0
    img_pts = np.stack([cx + (c * u - s * v) * k, cy + (s * u + c * v) * k, pts[:, 2] * k], axis=1)
    return FaceMesh(img_pts.astype(np.float32), presence, (cx, cy, side, angle))


def mesh_for_detection(rgb: np.ndarray, det: FaceDetection) -> FaceMesh:
    """Landmarks for a BlazeFace detection (MediaPipe's ROI: box x1.5, eye-line rotation)."""
    x, y, w, h = det.bbox
    kp = det.keypoints
    angle = math.atan2(float(kp[1, 1] - kp[0, 1]), float(kp[1, 0] - kp[0, 0]))
    return _run_mesh(rgb, x + w / 2, y + h / 2, max(w, h) * ROI_SCALE, angle)


#: Side of the first-pass ROI relative to a pre-cropped face's longer side.
CROP_ROI_SCALE = 1.25


def mesh_from_mesh(rgb: np.ndarray, mesh: FaceMesh) -> FaceMesh:
    """Re-run the landmark model on the ROI implied by a previous mesh (MediaPipe tracking step)."""
    p = mesh.points
    # eye corners 33 (right eye outer) and 263 (left eye outer) give the roll angle
    angle = math.atan2(float(p[263, 1] - p[33, 1]), float(p[263, 0] - p[33, 0]))
    c, s = math.cos(-angle), math.sin(-angle)
    cxm, cym = p[:, 0].mean(), p[:, 1].mean()
    xr = c * (p[:, 0] - cxm) - s * (p[:, 1] - cym)
    yr = s * (p[:, 0] - cxm) + c * (p[:, 1] - cym)
    mx, my = (xr.max() + xr.min()) / 2, (yr.max() + yr.min()) / 2
    cx = cxm + math.cos(angle) * mx - math.sin(angle) * my
    cy = cym + math.sin(angle) * mx + math.cos(angle) * my
    side = max(xr.max() - xr.min(), yr.max() - yr.min()) * ROI_SCALE
    return _run_mesh(rgb, cx, cy, side, angle)


def mesh_for_crop(rgb: np.ndarray, refine: bool = True) -> FaceMesh:
    """Landmarks for an image that is already a face crop (no detector)."""
    h, w = rgb.shape[:2]
    mesh = _run_mesh(rgb, w / 2.0, h / 2.0, max(w, h) * CROP_ROI_SCALE, 0.0)
    return mesh_from_mesh(rgb, mesh) if refine else mesh


def blendshapes(mesh: FaceMesh) -> np.ndarray:
    """52 blendshape scores in [0, 1] (BLENDSHAPE_NAMES order) from a mesh."""
    pts = mesh.points[list(LANDMARKS_SUBSET_IDXS), :2].astype(np.float32)
    (out,) = runner("face_blendshapes").run(pts[None])
    return np.clip(out.reshape(-1).astype(np.float64), 0.0, 1.0)
