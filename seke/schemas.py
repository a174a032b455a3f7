"""Column contracts of the lake tables (DESIGN.md §3).

Every stage writes exactly these columns (the partition columns ``source`` and ``batch`` live
in the hive path, not in the file). GX suites, DuckDB views, FEID exports and the trainer all
rely on them, so change them here and nowhere else.

Conventions:
* ``*_probs`` lists are aligned to :data:`seke.taxonomy.EXPRESSIONS` (expression) or
  :data:`seke.taxonomy.AU_CATALOGUE` (AUs); ``aus`` lists hold the ids of AUs judged present.
* ``*_origin`` is one of ``human`` (from the manifest / review), ``generated`` (annotator
  samples, accepted as is), ``verified`` (accepted or corrected by self-verification),
  ``derived`` (computed from other granularities, e.g. VA from expression probabilities).
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

PARTITION_COLUMNS = ("source", "batch")
ORIGINS = ("human", "generated", "verified", "derived")
LABEL_STATUS = ("accepted", "abstained")

RAW_FACES = pa.schema([
    ("face_id", pa.string()),            # sha256 of the normalised crop's PNG bytes
    ("file_name", pa.string()),          # path relative to the batch folder
    ("face_index", pa.int32()),          # index of the face within its photo (0 for crops)
    ("subject_id", pa.string()),
    ("split", pa.string()),              # manifest split (train/validation/…), may be null
    ("crop_png", pa.binary()),           # normalised crop, PNG
    ("crop_size", pa.int32()),
    ("image_width", pa.int32()),
    ("image_height", pa.int32()),
    ("detector", pa.string()),           # "blazeface" | "passthrough"
    ("det_score", pa.float64()),
    ("bbox", pa.list_(pa.float64())),    # x, y, w, h in original pixels
    ("known_expression", pa.string()),
    ("known_valence", pa.float64()),
    ("known_arousal", pa.float64()),
    ("known_aus", pa.list_(pa.int32())), # null = AUs not coded; [] = coded, none present
    ("invalid_labels", pa.list_(pa.string())),  # granularities whose human label was invalid or
                                         # conflicting (quarantined bad_label/conflicting_labels):
                                         # withheld, i.e. neither known nor generated
    ("phash", pa.string()),              # 64-bit perceptual hash of the crop, 16 hex digits
                                         # (seke.near_dup: near-duplicate guard of the split)
    ("licence", pa.string()),            # key in the licence register (seke.licences): the
                                         # manifest's licence cell, else the source name
])

QUARANTINE = pa.schema([
    ("item_id", pa.string()),            # file name, or face_id once one exists
    ("stage", pa.string()),              # raw_faces | mc_samples | verified_labels | …
    ("reason", pa.string()),             # short machine-readable reason (e.g. "no_face")
    ("detail", pa.string()),             # human-readable explanation
])

KNOWLEDGE_PROMPTS = pa.schema([
    ("face_id", pa.string()),
    ("prompt_version", pa.string()),
    ("prompt_hash", pa.string()),
    ("known", pa.list_(pa.string())),         # granularities given to the annotator as facts
    ("missing", pa.list_(pa.string())),       # granularities the annotator must produce
    ("audit_hidden", pa.list_(pa.string())),  # human labels hidden for audit mode
    ("withheld", pa.list_(pa.string())),      # invalid human labels: neither given nor asked
    ("messages_json", pa.string()),           # chat messages without the image
    ("knowledge_version", pa.string()),
])

MC_SAMPLES = pa.schema([
    ("face_id", pa.string()),
    ("prompt_hash", pa.string()),
    ("strategy", pa.string()),           # sv_uamc | single_shot | fixed_n
    ("round", pa.int32()),
    ("sample_index", pa.int32()),
    ("backend", pa.string()),            # offline | vllm | simulated
    ("model", pa.string()),
    ("temperature", pa.float64()),
    ("raw_text", pa.string()),
    ("parse_status", pa.string()),       # ok | repaired | failed
    ("error", pa.string()),
    ("expression", pa.string()),
    ("expression_probs", pa.list_(pa.float64())),
    ("valence", pa.float64()),
    ("arousal", pa.float64()),
    ("au_probs", pa.list_(pa.float64())),
    ("rationale", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("cost_usd", pa.float64()),
    ("cache_hit", pa.bool_()),
])

VERIFIED_LABELS = pa.schema([
    ("face_id", pa.string()),
    ("subject_id", pa.string()),
    ("split", pa.string()),
    ("status", pa.string()),             # accepted | abstained
    ("abstain_reason", pa.string()),
    ("strategy", pa.string()),
    ("expression", pa.string()),
    ("expression_confidence", pa.float64()),
    ("expression_origin", pa.string()),
    ("expression_probs", pa.list_(pa.float64())),
    ("valence", pa.float64()),
    ("arousal", pa.float64()),
    ("va_confidence", pa.float64()),
    ("va_origin", pa.string()),
    ("aus", pa.list_(pa.int32())),
    ("au_probs", pa.list_(pa.float64())),
    ("au_confidence", pa.float64()),
    ("au_origin", pa.string()),
    ("uncertainty_expression", pa.float64()),
    ("uncertainty_va", pa.float64()),
    ("uncertainty_aus", pa.float64()),
    ("n_samples", pa.int32()),
    ("n_calls", pa.int32()),             # model calls incl. verification
    ("stop_reason", pa.string()),
    ("verdict", pa.string()),            # none | accept | correct | reject
    ("verdict_reasons", pa.string()),
    ("consistency_score", pa.float64()),
    ("consistency_flags", pa.list_(pa.string())),
    ("knowledge_version", pa.string()),
    ("audit_hidden", pa.list_(pa.string())),  # granularities whose human label was hidden
    ("withheld", pa.list_(pa.string())),  # granularities left empty on purpose: the human label
                                          # was invalid (raw_faces.invalid_labels), none generated
    ("label_issue", pa.bool_()),          # suspected human expression label error (seke.label_noise,
                                          # audit-mode faces only; null = not checked); never overwritten
    ("label_issue_evidence", pa.string()),  # JSON: given/suggested class and probabilities
    ("produced_by", pa.string()),         # annotator (pool member name, or backend/model) whose
                                          # samples made the label; null = no sample
    ("verified_by", pa.string()),         # annotator that verified it (null = not verified)
    ("escalations", pa.int32()),          # cascade: times the face went to a dearer annotator
    ("checked_by", pa.list_(pa.string())),  # cascade cross-check: who re-checked the face a cheaper
                                          # stage resolved, one entry per answered check call (in n_calls)
    ("check_prompt_tokens", pa.list_(pa.int32())),      # per checked_by entry: tokens billed
    ("check_completion_tokens", pa.list_(pa.int32())),  # (null: answered from the cache)
    ("check_failed_by", pa.list_(pa.string())),  # check calls that failed unanswered (down, 401,
                                          # budget): not billed, not in n_calls
    ("verify_prompt_tokens", pa.int32()),      # the face's verification call (not a check): tokens
    ("verify_completion_tokens", pa.int32()),  # billed; null = none sent, cache hit or unanswered
])

FEID = pa.schema([
    ("record_id", pa.string()),
    ("face_id", pa.string()),
    ("task", pa.string()),               # expression | va | aus | combined
    ("template_id", pa.string()),
    ("template_version", pa.string()),
    ("instruction", pa.string()),
    ("response", pa.string()),
    ("rationale", pa.string()),
    ("expression", pa.string()),
    ("valence", pa.float64()),
    ("arousal", pa.float64()),
    ("aus", pa.list_(pa.int32())),
    ("origin", pa.string()),             # weakest origin among the labels used
    ("confidence", pa.float64()),
    ("image_png", pa.binary()),
])

FEAB = pa.schema([
    ("item_id", pa.string()),
    ("face_id", pa.string()),
    ("subject_id", pa.string()),
    ("task", pa.string()),               # expression | va | aus
    ("question", pa.string()),
    ("options", pa.list_(pa.string())),
    ("gold_expression", pa.string()),
    ("gold_valence", pa.float64()),
    ("gold_arousal", pa.float64()),
    ("gold_aus", pa.list_(pa.int32())),
    ("gold_origin", pa.string()),
    ("gold_flagged", pa.bool_()),        # gold is generated-and-verified, not human
    ("image_png", pa.binary()),
])

TABLES: dict[str, pa.Schema] = {
    "raw_faces": RAW_FACES, "quarantine": QUARANTINE, "knowledge_prompts": KNOWLEDGE_PROMPTS,
    "mc_samples": MC_SAMPLES,
    "verified_labels": VERIFIED_LABELS, "feid": FEID, "feab": FEAB,
}



def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast/select ``table`` to ``schema`` (missing columns become nulls, extra columns dropped)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def frame_from_rows(rows: list[dict], schema: pa.Schema, extra: Sequence[str] = ()) -> "pl.DataFrame":
    """A polars frame of ``rows`` conformed to ``schema``, plus string columns ``extra``
    (e.g. the partition columns ``source``/``batch``) carried through from the rows."""
    import polars as pl

    table = conform(pa.Table.from_pylist(rows) if rows else schema.empty_table(), schema)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if extra:
        extras = pl.DataFrame({c: [r[c] for r in rows] for c in extra}, schema={c: pl.String for c in extra})
        frame = pl.concat([frame, extras], how="horizontal")
    return frame
