"""Offline face vision on LiteRT: BlazeFace detection, FaceMesh landmarks, blendshapes, expression.

Every model runs through ``ai_edge_litert`` on the CPU (no TensorFlow, no torch). Weights come
from the sha256-checked cache of :mod:`seke.weights`; a missing file raises
:class:`seke.weights.WeightsMissing` naming the fetch command. Interpreters are created lazily,
once per process, and guarded by a lock each (a LiteRT interpreter is not re-entrant).
"""

from seke.vision.detect import FaceDetection, detect_faces
from seke.vision.expression import FER_CLASSES, expression_probs
from seke.vision.landmarks import BLENDSHAPE_NAMES, FaceMesh, blendshapes, mesh_for_crop, mesh_for_detection

__all__ = [
    "FaceDetection", "detect_faces", "FER_CLASSES", "expression_probs", "BLENDSHAPE_NAMES",
    "FaceMesh", "blendshapes", "mesh_for_crop", "mesh_for_detection",
]
