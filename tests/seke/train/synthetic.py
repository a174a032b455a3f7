"""Small, learnable synthetic faces as real FEID/FEAB Parquet rows (PNG bytes, FEID columns).

Each class draws stripes of its own orientation (horizontal, vertical, two diagonals) on a
noisy grey square — a pattern that survives global pooling — so a tiny CNN can learn
expression, VA and AUs from pixels in a few steps — a check that training learns, with
no real data. Not a mock: the rows go through real PNG encoding and real Parquet in the tests.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image

from seke.schemas import FEAB, FEID, conform

CLASSES = ("happiness", "sadness", "surprise", "anger")
VA = {"happiness": (0.8, 0.5), "sadness": (-0.6, -0.3), "surprise": (0.3, 0.7), "anger": (-0.5, 0.6)}
AUS = {"happiness": [6, 12], "sadness": [1, 4, 15], "surprise": [1, 2, 5, 26], "anger": [4, 5, 7, 23]}


def face_png(cls: int, rng: np.random.Generator, size: int = 24) -> bytes:
    yy, xx = np.mgrid[0:size, 0:size]
    phase = int(rng.integers(4))
    coord = (yy, xx, yy + xx, yy - xx)[cls % 4] + phase
    img = rng.normal(80, 15, (size, size)) + 100 * ((coord // 2) % 2)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def feid_rows(n_faces: int, seed: int = 0, *, with_va: bool = True, with_aus: bool = True,
              origin: str = "human", start: int = 0) -> pa.Table:
    """FEID records: per face one expression, va, aus and combined record (like seke.feid)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_faces):
        cls = int(rng.integers(len(CLASSES)))
        name = CLASSES[cls]
        png = face_png(cls, rng)
        fid = f"face{start + i:05d}"
        tasks = ["expression"] + (["va"] if with_va else []) + (["aus"] if with_aus else []) + ["combined"]
        for task in tasks:
            used = ["expression", "va", "aus"] if task == "combined" else [task]
            rows.append({
                "record_id": f"{fid}-{task}", "face_id": fid, "task": task, "template_id": f"{task}/0",
                "template_version": "test", "instruction": "?", "response": "!",
                "expression": name if "expression" in used else None,
                "valence": VA[name][0] if ("va" in used and with_va) else None,
                "arousal": VA[name][1] if ("va" in used and with_va) else None,
                "aus": AUS[name] if ("aus" in used and with_aus) else None,
                "origin": origin if task == "expression" else "generated",
                "confidence": 1.0 if task == "expression" else 0.8,
                "image_png": png,
            })
    return conform(pa.Table.from_pylist(rows), FEID)


def feab_rows(n_faces: int, seed: int = 99) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_faces):
        cls = int(rng.integers(len(CLASSES)))
        name = CLASSES[cls]
        png = face_png(cls, rng)
        for task in ("expression", "va", "aus"):
            rows.append({"item_id": f"b{i}-{task}", "face_id": f"bench{i:04d}", "subject_id": None,
                         "task": task, "question": "?", "options": None,
                         "gold_expression": name if task == "expression" else None,
                         "gold_valence": VA[name][0] if task == "va" else None,
                         "gold_arousal": VA[name][1] if task == "va" else None,
                         "gold_aus": AUS[name] if task == "aus" else None,
                         "gold_origin": "human", "gold_flagged": False, "image_png": png})
    return conform(pa.Table.from_pylist(rows), FEAB)
