"""A compact, lossless ``.npz`` of :class:`~seke.train.arrays.FaceArrays`.

Why: the lent GPU machine has neither the lake nor ``../shared/data`` and only 64 MiB travel
with the repository. FER2013 (32,298 faces, 48×48 grey) is 74 MB of pixels; zlib saves ~5 %,
so the images are stored as LOCO-I/JPEG-LS "MED" prediction residuals (Weinberger et al. 2000)
compressed with LZMA: 0.763 of the raw size on all of FER2013 (54 MiB), against 0.95 for
zlib on raw pixels and 0.80 for the original JPEG files — the figures of
``PYTHONPATH=. python bench/pack_fer.py --data-dir ../shared/data/fer2013`` (RESULT
``ratio_vs_raw=0.763 zlib_ratio=0.953 files_ratio=0.802 npz_mib=54.14``; ~90 s on 2 cores).
The residual transform is exact (mod 256), so decoded pixels are bit-identical.

Only numpy and the standard library: the GPU image has numpy and torch, not polars/dagster.
"""

from __future__ import annotations

import json
import lzma
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from seke.train.arrays import FaceArrays

FORMAT = "seke-facearrays-v1"
_STRINGS = ("face_id", "expression_origin", "split")


def _med_predict(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Median edge detector: a = left, b = up, c = up-left (int16 arrays)."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def encode_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 → LZMA bytes (as a uint8 array) of the MED residuals, image after image."""
    x = images.astype(np.int16)
    a = np.zeros_like(x); a[:, :, 1:] = x[:, :, :-1]
    b = np.zeros_like(x); b[:, 1:, :] = x[:, :-1, :]
    c = np.zeros_like(x); c[:, 1:, 1:] = x[:, :-1, :-1]
    residual = ((x - _med_predict(a, b, c)) % 256).astype(np.uint8)
    return np.frombuffer(lzma.compress(residual.tobytes(), preset=6), dtype=np.uint8)


def decode_images(blob: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`encode_images`; ``shape`` is (N, H, W)."""
    n, h, w = shape
    res = np.frombuffer(lzma.decompress(blob.tobytes()), dtype=np.uint8).reshape(n, h, w)
    # undo the prediction pixel by pixel, vectorised over images: lay images out last
    res = np.ascontiguousarray(np.transpose(res, (1, 2, 0))).astype(np.int16)
    x = np.zeros((h, w, n), np.int16)
    zero = np.zeros(n, np.int16)
    for i in range(h):
        for j in range(w):
            a = x[i, j - 1] if j else zero
            b = x[i - 1, j] if i else zero
            c = x[i - 1, j - 1] if i and j else zero
            x[i, j] = (res[i, j] + _med_predict(a, b, c)) % 256
    return np.ascontiguousarray(np.transpose(x, (2, 0, 1))).astype(np.uint8)


def save_npz(arrays: FaceArrays, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` (+ JSON ``meta``) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "meta": np.array(json.dumps(meta or {}, sort_keys=True)),
        "images_shape": np.array(arrays.images.shape, dtype=np.int64),
        "images_med_lzma": encode_images(arrays.images),
    }
    for f in fields(FaceArrays):
        if f.name == "images":
            continue
        value = getattr(arrays, f.name)
        payload[f.name] = value.astype(str) if f.name in _STRINGS else value
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **payload)
    tmp.replace(path)
    return path


def load_npz(path: str | Path) -> tuple[FaceArrays, dict[str, Any]]:
    """Read a file written by :func:`save_npz`; returns (arrays, meta)."""
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format={z['format']!r})")
        shape = tuple(int(v) for v in z["images_shape"])
        values: dict[str, np.ndarray] = {"images": decode_images(z["images_med_lzma"], shape)}  # type: ignore[arg-type]
        for f in fields(FaceArrays):
            if f.name == "images":
                continue
            v = z[f.name]
            values[f.name] = v.astype(object) if f.name in _STRINGS else v
        meta = json.loads(str(z["meta"]))
    return FaceArrays(**values), meta
