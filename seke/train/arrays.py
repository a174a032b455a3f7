"""Faces as training arrays: decoded grey images + per-granularity labels, weights and origins.

FEID holds several instruction records per face (one per granularity plus a ``combined`` one,
each with the same image). A model must see each face once per epoch with all its labels, so
:func:`from_feid` folds the records of a face into one row: the label of granularity *g* comes
from the face's ``task == g`` record (its ``origin`` and ``confidence`` are that label's), or
from the ``combined`` record when there is no task record. A granularity with no label gets
weight 0, which the losses turn into a mask.

Everything here is numpy + Pillow (+ pyarrow for FEID), no torch, so packing data and building
datasets works on machines without the training extra.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS, normalise_expression

_EXPR_INDEX = {e: i for i, e in enumerate(EXPRESSIONS)}
_AU_INDEX = {a: i for i, a in enumerate(AU_CATALOGUE)}


@dataclass
class FaceArrays:
    """N faces. Missing labels: ``expression == -1`` / weight 0 / origin ``""``."""

    face_id: np.ndarray            # (N,) str
    images: np.ndarray             # (N, S, S) uint8 grey
    expression: np.ndarray         # (N,) int64 index into EXPRESSIONS, -1 = missing
    expression_w: np.ndarray       # (N,) float32 label confidence, 0 = missing
    expression_origin: np.ndarray  # (N,) str: human | generated | verified | derived | ""
    va: np.ndarray                 # (N, 2) float32 valence, arousal (0 where missing)
    va_w: np.ndarray               # (N,) float32
    aus: np.ndarray                # (N, len(AU_CATALOGUE)) float32 multi-hot
    aus_w: np.ndarray              # (N,) float32
    split: np.ndarray              # (N,) str: manifest split ("train"/"validation"/…) or ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray | slice | list[int]) -> "FaceArrays":
        return FaceArrays(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def where_split(self, split: str) -> "FaceArrays":
        return self.subset(np.flatnonzero(self.split == split))

    def counts(self) -> dict[str, int]:
        """How many faces carry each granularity (for logs and metadata)."""
        return {"faces": len(self), "expression": int((self.expression_w > 0).sum()),
                "va": int((self.va_w > 0).sum()), "aus": int((self.aus_w > 0).sum()),
                "human_expression": int((self.expression_origin == "human").sum())}

    @staticmethod
    def concat(parts: list["FaceArrays"]) -> "FaceArrays":
        return FaceArrays(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                             for f in fields(FaceArrays)})

    @staticmethod
    def empty(image_size: int = 48) -> "FaceArrays":
        return _allocate(0, image_size)


def _allocate(n: int, size: int) -> FaceArrays:
    return FaceArrays(
        face_id=np.empty(n, dtype=object), images=np.zeros((n, size, size), np.uint8),
        expression=np.full(n, -1, np.int64), expression_w=np.zeros(n, np.float32),
        expression_origin=np.full(n, "", dtype=object), va=np.zeros((n, 2), np.float32),
        va_w=np.zeros(n, np.float32), aus=np.zeros((n, len(AU_CATALOGUE)), np.float32),
        aus_w=np.zeros(n, np.float32), split=np.full(n, "", dtype=object))


def grey_pixels(image: Image.Image, size: int) -> np.ndarray:
    """A decoded image → (size, size) uint8 grey, as every network input is made (training,
    evaluation and the offline annotator's second expression model)."""
    im = image.convert("L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.array(im, dtype=np.uint8)


def decode_grey(data: bytes, size: int) -> np.ndarray:
    """Image bytes (PNG/JPEG/…) → (size, size) uint8 grey; raises ValueError on bad input."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return grey_pixels(im, size)
    except Exception as exc:  # PIL raises many types; one clear per-item error instead
        raise ValueError(f"undecodable image: {type(exc).__name__}: {exc}") from exc


def _conf(value: Any, default: float) -> float:
    if value is None:
        return default
    v = float(value)
    return default if v != v else min(max(v, 0.0), 1.0)


def from_feid(table: Any, image_size: int = 48, *, missing_confidence: float = 1.0
              ) -> tuple[FaceArrays, list[dict[str, str]]]:
    """Fold FEID records (pyarrow Table or polars DataFrame, FEID columns) into one row per face.

    Returns the arrays and per-face errors (``{"face_id", "reason"}``) for faces whose image
    cannot be decoded or whose labels are unusable; those faces are left out, the rest go on.
    """
    if hasattr(table, "to_arrow") and not hasattr(table, "column_names"):
        table = table.to_arrow()  # polars → arrow without importing polars here
    cols = ["face_id", "task", "expression", "valence", "arousal", "aus", "origin", "confidence"]
    data = {c: table.column(c).to_pylist() for c in cols}
    images_col = table.column("image_png")
    by_face: dict[str, dict[str, Any]] = {}
    for i, fid in enumerate(data["face_id"]):
        face = by_face.setdefault(fid, {"row": i, "labels": {}})
        task = data["task"][i]
        candidates = {"expression": data["expression"][i] is not None,
                      "va": data["valence"][i] is not None and data["arousal"][i] is not None,
                      "aus": data["aus"][i] is not None}
        for g, present in candidates.items():
            if not present:
                continue
            rank = 0 if task == g else 1          # the granularity's own record wins
            old = face["labels"].get(g)
            if old is None or rank < old[0]:
                face["labels"][g] = (rank, i)
    out = _allocate(len(by_face), image_size)
    errors: list[dict[str, str]] = []
    keep: list[int] = []
    for k, (fid, face) in enumerate(by_face.items()):
        out.face_id[k] = fid
        try:
            out.images[k] = decode_grey(images_col[face["row"]].as_py(), image_size)
        except ValueError as exc:
            errors.append({"face_id": fid, "reason": str(exc)})
            continue
        labels = face["labels"]
        if "expression" in labels:
            i = labels["expression"][1]
            name = normalise_expression(data["expression"][i])
            if name is None:
                errors.append({"face_id": fid, "reason": f"unknown expression {data['expression'][i]!r}"})
            else:
                out.expression[k] = _EXPR_INDEX[name]
                out.expression_w[k] = _conf(data["confidence"][i], missing_confidence)
                out.expression_origin[k] = data["origin"][i] or ""
        if "va" in labels:
            i = labels["va"][1]
            out.va[k] = np.clip([data["valence"][i], data["arousal"][i]], -1.0, 1.0)
            out.va_w[k] = _conf(data["confidence"][i], missing_confidence)
        if "aus" in labels:
            i = labels["aus"][1]
            for au in data["aus"][i]:
                if int(au) in _AU_INDEX:
                    out.aus[k, _AU_INDEX[int(au)]] = 1.0
            out.aus_w[k] = _conf(data["confidence"][i], missing_confidence)
        keep.append(k)
    return out.subset(np.asarray(keep, dtype=np.int64)), errors


def from_manifest(folder: str | Path, image_size: int = 48, *, splits: Iterable[str] | None = None,
                  limit: int | None = None, keep: Callable[[dict[str, str]], bool] | None = None
                  ) -> tuple[FaceArrays, list[dict[str, str]]]:
    """A ``../shared/data`` set (``manifest.csv`` + ``images/``) with its human labels.

    ``keep`` selects manifest rows (e.g. CK+ subjects held out of a training set).

    Expression labels are human (weight 1); ``auN`` columns (CK+) give human AU labels. The
    face id is the sha256 of the file bytes (stable, though not the platform's crop face_id).
    """
    folder = Path(folder)
    with open(folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if splits is not None:
        wanted = set(splits)
        rows = [r for r in rows if r.get("split", "") in wanted]
    if keep is not None:
        rows = [r for r in rows if keep(r)]
    if limit is not None and limit < len(rows):
        # manifests are sorted by label: take a seeded random sample, not the first rows
        pick = np.sort(np.random.default_rng(0).choice(len(rows), size=limit, replace=False))
        rows = [rows[i] for i in pick]
    au_cols = [(c, int(c[2:])) for c in (rows[0].keys() if rows else []) if c.startswith("au") and c[2:].isdigit()]
    out = _allocate(len(rows), image_size)
    errors: list[dict[str, str]] = []
    keep: list[int] = []
    for k, row in enumerate(rows):
        path = folder / row["image"]
        try:
            raw = path.read_bytes()
            out.images[k] = decode_grey(raw, image_size)
        except (OSError, ValueError) as exc:
            errors.append({"face_id": row["image"], "reason": str(exc)})
            continue
        out.face_id[k] = hashlib.sha256(raw).hexdigest()
        out.split[k] = row.get("split", "") or ""
        name = normalise_expression(row.get("expression"))
        if name is not None:
            out.expression[k] = _EXPR_INDEX[name]
            out.expression_w[k] = 1.0
            out.expression_origin[k] = "human"
        if au_cols:
            for col, au in au_cols:
                if str(row.get(col, "")).strip() in ("1", "1.0", "true", "True") and au in _AU_INDEX:
                    out.aus[k, _AU_INDEX[au]] = 1.0
            out.aus_w[k] = 1.0
        keep.append(k)
    return out.subset(np.asarray(keep, dtype=np.int64)), errors


def pixel_keys(arrays: FaceArrays) -> np.ndarray:
    """Content hash of each decoded image (detects the same face across sources)."""
    return np.array([hashlib.sha1(img.tobytes()).hexdigest() for img in arrays.images], dtype=object)


def drop_overlap(train: FaceArrays, held_out: FaceArrays) -> tuple[FaceArrays, int]:
    """``train`` without faces whose pixels equal a held-out face (evaluation leak guard)."""
    if len(train) == 0 or len(held_out) == 0:
        return train, 0
    held = set(pixel_keys(held_out))
    mask = np.array([k not in held for k in pixel_keys(train)], dtype=bool)
    return train.subset(np.flatnonzero(mask)), int((~mask).sum())


def data_version(partition_keys: Iterable[str], face_ids: Iterable[str]) -> str:
    """Version of a training set: sha256 over the sorted FEID partition keys and face ids.

    face_id is itself a content hash of the crop, so the version changes when a partition is
    added, removed or re-materialized with different faces, and only then.
    """
    h = hashlib.sha256()
    for key in sorted(set(partition_keys)):
        h.update(b"P" + key.encode() + b"\0")
    for fid in sorted(set(str(f) for f in face_ids)):
        h.update(b"F" + fid.encode() + b"\0")
    return h.hexdigest()[:12]
