"""Small, real lake tables for the product tests (FEID, FEAB, warehouse, exports, evaluation).

Faces are real PNG crops drawn with Pillow; label rows follow ``seke.schemas`` exactly, so the
code under test sees what the pipeline writes.
"""

from __future__ import annotations

import hashlib
import io

import polars as pl
import pyarrow as pa
from PIL import Image, ImageDraw

from seke.schemas import RAW_FACES, VERIFIED_LABELS, conform
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

PROTO = {"happiness": [6, 12, 25], "sadness": [1, 4, 15], "surprise": [1, 2, 5, 26],
         "anger": [4, 5, 7, 23], "fear": [1, 2, 4, 5, 20], "disgust": [9, 10],
         "neutral": [], "contempt": [12, 14]}
VA = {"happiness": (0.7, 0.4), "sadness": (-0.6, -0.3), "surprise": (0.3, 0.7),
      "anger": (-0.5, 0.6), "fear": (-0.6, 0.6), "disgust": (-0.6, 0.35), "neutral": (0.0, 0.0),
      "contempt": (-0.4, 0.2)}


def png(seed: int, size: int = 48) -> bytes:
    img = Image.new("L", (size, size), color=(seed * 37) % 256)
    d = ImageDraw.Draw(img)
    d.ellipse((8, 8, size - 8, size - 8), outline=(seed * 91 + 60) % 256)
    d.line((12, 30 + seed % 7, 36, 30), fill=255)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_faces(n_subjects: int = 10, per_subject: int = 3, n_loose: int = 24,
               source: str = "ckplus", batch: str = "b1") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(raw_faces, verified_labels) for ``n_subjects`` subjects + ``n_loose`` subject-less faces.

    Subject faces carry human expression + AUs (like CK+); loose faces carry a human expression
    only, with VA and AUs generated/verified/derived by the pipeline (like FER2013). Every 7th
    face is abstained.
    """
    raw, labels = [], []
    k = 0
    exprs = [e for e in EXPRESSIONS]
    for s in range(n_subjects + 1):
        count = per_subject if s < n_subjects else n_loose
        for j in range(count):
            e = exprs[(s * 3 + j) % len(exprs)]
            image = png(k)
            fid = hashlib.sha256(image + f"{source}:{k}".encode()).hexdigest()
            subject = f"S{s:03d}" if s < n_subjects else None
            human_aus = PROTO[e] if subject else None
            raw.append({"face_id": fid, "file_name": f"images/{k}.png", "face_index": 0,
                        "subject_id": subject, "split": None, "crop_png": image, "crop_size": 48,
                        "image_width": 48, "image_height": 48, "detector": "passthrough",
                        "det_score": 1.0, "bbox": [0.0, 0.0, 48.0, 48.0], "known_expression": e,
                        "known_valence": None, "known_arousal": None, "known_aus": human_aus})
            abstained = k % 7 == 6
            v, a = VA[e]
            aus = PROTO[e]
            au_probs = [0.9 if au in aus else 0.1 for au in AU_CATALOGUE]
            probs = [0.8 if x == e else 0.2 / 7 for x in EXPRESSIONS]
            labels.append({
                "face_id": fid, "subject_id": subject, "split": None,
                "status": "abstained" if abstained else "accepted",
                "abstain_reason": "inconsistent" if abstained else None, "strategy": "sv_uamc",
                "expression": e, "expression_confidence": 1.0, "expression_origin": "human",
                "expression_probs": probs, "valence": v, "arousal": a, "va_confidence": 0.7,
                "va_origin": "verified" if k % 2 else "derived", "aus": aus, "au_probs": au_probs,
                "au_confidence": 1.0 if subject else 0.6,
                "au_origin": "human" if subject else ("verified" if k % 3 == 0 else "generated"),
                "uncertainty_expression": 0.0, "uncertainty_va": 0.1, "uncertainty_aus": 0.2,
                "n_samples": 3 + k % 5, "n_calls": 4 + k % 5, "stop_reason": "confident",
                "verdict": "accept" if k % 2 else "none", "verdict_reasons": "",
                "consistency_score": 0.9 - 0.01 * (k % 10),
                "consistency_flags": ["va_outside_region"] if k % 11 == 0 else [],
                "knowledge_version": "v1", "audit_hidden": [],
                "verify_prompt_tokens": 900 + k if k % 2 else None,
                "verify_completion_tokens": 40 if k % 2 else None,
                "checked_by": ["other"] if k % 4 == 1 else [],
                "check_prompt_tokens": [700] if k % 4 == 1 else [],
                "check_completion_tokens": [None] if k % 4 == 1 else [],   # a cache hit
            })
            k += 1
    raw_df = pl.from_arrow(conform(pa.Table.from_pylist(raw), RAW_FACES))
    lab_df = pl.from_arrow(conform(pa.Table.from_pylist(labels), VERIFIED_LABELS))
    extra = {"source": source, "batch": batch}
    raw_df = raw_df.with_columns([pl.lit(v).alias(c) for c, v in extra.items()])
    lab_df = lab_df.with_columns([pl.lit(v).alias(c) for c, v in extra.items()])
    return raw_df, lab_df


def make_samples(labels: pl.DataFrame, backend: str = "offline", model: str = "fer+blendshapes") -> pl.DataFrame:
    """mc_samples rows: ``n_samples`` per face, every 9th sample a parse failure, priced per token."""
    from seke.schemas import MC_SAMPLES

    rows = []
    for r in labels.iter_rows(named=True):
        for i in range(r["n_samples"]):
            failed = (len(rows) % 9) == 8
            rows.append({"face_id": r["face_id"], "prompt_hash": "p1", "strategy": "sv_uamc",
                         "round": i // 3, "sample_index": i, "backend": backend, "model": model,
                         "temperature": 0.7, "raw_text": "{}", "parse_status": "failed" if failed else "ok",
                         "error": "no JSON object" if failed else None,
                         "expression": None if failed else r["expression"], "prompt_tokens": 100,
                         "completion_tokens": 20, "latency_ms": 10.0 + i, "cost_usd": 0.0012,
                         "cache_hit": i == 0})
    return pl.from_arrow(conform(pa.Table.from_pylist(rows), MC_SAMPLES))


def make_lake(root: str, s3_endpoint: str | None = None) -> "object":
    """A small materialized lake with every table the analyst queries touch.

    Two partitions (ckplus/b1 with subjects and AUs, fer2013/b2 without); in fer2013 the first
    six faces are audit faces (expression hidden), two of them answered wrongly.
    """
    from seke.evaluate import constant_baseline, evaluate, store
    from seke.feab import build_feab
    from seke.feid import build_feid
    from seke.lake import Lake

    lake = Lake(root, s3_endpoint=s3_endpoint)
    for source, batch, subjects, loose in (("ckplus", "b1", 8, 0), ("fer2013", "b2", 0, 30)):
        raw, labels = make_faces(n_subjects=subjects, per_subject=3, n_loose=loose, source=source, batch=batch)
        if source == "fer2013":
            idx = pl.int_range(pl.len())
            labels = labels.with_columns(
                pl.when(idx < 6).then(pl.lit(["expression"])).otherwise(pl.col("audit_hidden")).alias("audit_hidden"),
                pl.when(idx < 2).then(pl.lit("contempt")).otherwise(pl.col("expression")).alias("expression"))
        part = {"source": source, "batch": batch}
        lake.write_partition("raw_faces", part, raw)
        lake.write_partition("verified_labels", part, labels)
        lake.write_partition("mc_samples", part, make_samples(labels))
        lake.write_partition("quarantine", part, pl.DataFrame(
            {"item_id": [f"{source}/bad.jpg", f"{source}/noface.png"], "stage": ["raw_faces", "raw_faces"],
             "reason": ["decode_error", "no_face"], "detail": ["cannot decode", "no face found"]}))
        lake.write_partition("feid", part, build_feid(labels, raw).drop("source", "batch"))
        lake.write_partition("feab", part, build_feab(labels, raw, fraction=0.4).drop("source", "batch"))
    feab = lake.read_table("feab")
    for expression in ("neutral", "happiness"):
        store(lake, evaluate(constant_baseline(expression=expression), feab, plots=False,
                             run_id=f"run-{expression}"))
    return lake
