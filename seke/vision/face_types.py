"""The detector's output type, shared by the detector and the landmark model (so neither
imports the other)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class FaceDetection:
    """One detected face: box (x, y, w, h) and 6 keypoints (see KEYPOINT_NAMES) in image pixels."""

    bbox: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray
