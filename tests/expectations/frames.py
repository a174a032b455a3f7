"""Small, realistic partitions of every gated table, clean by default, to break on purpose.

Labels are consistent under the v1 knowledge (EMFACS prototypes + circumplex anchors), and
``consistency_flags``/``consistency_score`` are computed with the real
:func:`seke.consistency.score_consistency`, so a broken label shows up through the same code
path the pipeline uses.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from seke import schemas
from seke.annotation import Labels
from seke.consistency import score_consistency
from seke.knowledge import knowledge_v1
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

#: (expression, valence, arousal, AUs) prototypes that are consistent under knowledge v1.
PROTOTYPES = [
    ("happiness", 0.75, 0.45, [6, 12, 25]),
    ("sadness", -0.6, -0.3, [1, 4, 15]),
    ("surprise", 0.3, 0.7, [1, 2, 5, 26]),
    ("neutral", 0.0, 0.05, []),
    ("anger", -0.5, 0.6, [4, 5, 7, 23]),
]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pl.DataFrame:
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    frame = pl.from_arrow(pa.Table.from_pydict(cols, schema=schema))
    assert isinstance(frame, pl.DataFrame)
    return frame


def face_id(i: int) -> str:
    return f"{i:064x}"


def raw_faces(n: int = 10) -> pl.DataFrame:
    rows = []
    for i in range(n):
        e, v, a, aus = PROTOTYPES[i % len(PROTOTYPES)]
        rows.append({"face_id": face_id(i), "file_name": f"img{i}.png", "face_index": 0,
                     "subject_id": f"S{i % 3}", "split": "train", "crop_png": PNG,
                     "crop_size": 112, "image_width": 640, "image_height": 490,
                     "detector": "blazeface", "det_score": 0.93, "bbox": [10.0, 20.0, 100.0, 100.0],
                     "known_expression": e, "known_valence": None, "known_arousal": None,
                     "known_aus": aus if i % 2 == 0 else None})
    return _table(rows, schemas.RAW_FACES)


def label_rows(n: int = 10) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        e, v, a, aus = PROTOTYPES[i % len(PROTOTYPES)]
        rows.append({"face_id": face_id(i), "subject_id": f"S{i % 3}", "split": "train",
                     "status": "accepted", "abstain_reason": None, "strategy": "sv_uamc",
                     "expression": e, "expression_confidence": 0.9, "expression_origin": "human",
                     "expression_probs": [1.0 if x == e else 0.0 for x in EXPRESSIONS],
                     "valence": v, "arousal": a, "va_confidence": 0.7, "va_origin": "generated",
                     "aus": aus, "au_probs": [0.9 if au in aus else 0.1 for au in AU_CATALOGUE],
                     "au_confidence": 0.8, "au_origin": "generated",
                     "uncertainty_expression": 0.0, "uncertainty_va": 0.05, "uncertainty_aus": 0.1,
                     "n_samples": 6, "n_calls": 2, "stop_reason": "confident", "verdict": "none",
                     "verdict_reasons": None, "knowledge_version": "v1", "audit_hidden": []})
    return rows


def verified_labels(rows: list[dict[str, Any]] | None = None, score: bool = True) -> pl.DataFrame:
    """A verified_labels partition; ``score`` fills the consistency columns like the pipeline."""
    rows = [dict(r) for r in (rows if rows is not None else label_rows())]
    if score:
        k = knowledge_v1()
        for r in rows:
            aus = r.get("aus")
            res = score_consistency(Labels(r.get("expression"), r.get("valence"), r.get("arousal"),
                                           None if aus is None else {a: 1.0 for a in aus}), k)
            r["consistency_score"], r["consistency_flags"] = res.score, list(res.flags)
    return _table(rows, schemas.VERIFIED_LABELS)


def mc_samples(n_faces: int = 5, per_face: int = 6, failed_share: float = 0.0) -> pl.DataFrame:
    rows = []
    total = n_faces * per_face
    n_failed = round(total * failed_share)
    for j in range(total):
        i, s = divmod(j, per_face)
        e, v, a, aus = PROTOTYPES[i % len(PROTOTYPES)]
        failed = j < n_failed
        rows.append({"face_id": face_id(i), "prompt_hash": "abcd1234abcd1234", "strategy": "sv_uamc",
                     "round": s // 3, "sample_index": s, "backend": "simulated", "model": "sim-1",
                     "temperature": 0.7, "raw_text": "{}" if not failed else "not json",
                     "parse_status": "failed" if failed else "ok",
                     "error": "invalid JSON" if failed else None,
                     "expression": None if failed else e,
                     "expression_probs": None if failed else [1.0 if x == e else 0.0 for x in EXPRESSIONS],
                     "valence": None if failed else v, "arousal": None if failed else a,
                     "au_probs": None if failed else [0.9 if au in aus else 0.1 for au in AU_CATALOGUE],
                     "rationale": "", "prompt_tokens": 900, "completion_tokens": 80,
                     "latency_ms": 300.0, "cost_usd": 0.0, "cache_hit": False})
    return _table(rows, schemas.MC_SAMPLES)


def feid(n_faces: int = 4) -> pl.DataFrame:
    rows = []
    for i in range(n_faces):
        e, v, a, aus = PROTOTYPES[i % len(PROTOTYPES)]
        for task in ("expression", "va", "aus", "combined"):
            rows.append({"record_id": f"{face_id(i)}-{task}", "face_id": face_id(i), "task": task,
                         "template_id": "t1", "template_version": "1", "instruction": "Describe.",
                         "response": "…", "rationale": "", "expression": e, "valence": v,
                         "arousal": a, "aus": aus, "origin": "generated", "confidence": 0.8,
                         "image_png": PNG})
    return _table(rows, schemas.FEID)


def feab(n_faces: int = 4) -> pl.DataFrame:
    rows = []
    for i in range(n_faces):
        e, v, a, aus = PROTOTYPES[i % len(PROTOTYPES)]
        for task in ("expression", "va", "aus"):
            rows.append({"item_id": f"{face_id(i)}-{task}", "face_id": face_id(i),
                         "subject_id": f"S{i}", "task": task, "question": "?",
                         "options": list(EXPRESSIONS) if task == "expression" else None,
                         "gold_expression": e, "gold_valence": v, "gold_arousal": a,
                         "gold_aus": aus, "gold_origin": "human", "gold_flagged": False,
                         "image_png": PNG})
    return _table(rows, schemas.FEAB)
