"""Quarantine rows: every item a stage drops, with a machine-readable reason.

The quarantine lake table (``seke.schemas.QUARANTINE``: item_id, stage, reason, detail) is
hive-partitioned like the stage it comes from, so "what did we drop from ckplus/2026-11-22 and
why" is one DuckDB query. These helpers build those rows from the stage outputs; the assets
write them (one quarantine partition per stage partition, replaced on re-materialization).

Reasons (keep them short and stable; dashboards group on them):
``bad_image``/``no_face``/… (raw_faces, from seke.faces), ``parse_failed`` (a sample whose
answer could not be parsed), ``abstained`` (SV-UAMC gave up), ``inconsistent`` (abstained
because the granularities disagree), ``review_unusable`` (a reviewer marked the face unusable),
``review_invalid`` (a review answer that failed validation), ``gate:<check>`` (a row named by a
failed blocking quality gate).

Details can quote server text (a failed sample's error); stages that talk to an endpoint pass
its ``secrets`` so that no piece of an API key is written (:func:`seke.scrub.scrub`).
"""

from __future__ import annotations

from typing import Iterable

import polars as pl
import pyarrow as pa

from seke.schemas import QUARANTINE
from seke.scrub import scrub

PARSE_FAILURE = "parse_failed"
ABSTAINED = "abstained"
INCONSISTENT = "inconsistent"
REVIEW_UNUSABLE = "review_unusable"
REVIEW_INVALID = "review_invalid"


def rows(items: Iterable[tuple[str, str, str | None]], stage: str,
         secrets: Iterable[str | None] = ()) -> pl.DataFrame:
    """Quarantine frame (QUARANTINE schema) from ``(item_id, reason, detail)`` triples;
    ``secrets`` are scrubbed from the details."""
    items = list(items)
    secrets = tuple(secrets)
    table = pa.Table.from_pydict({
        "item_id": [str(i[0]) for i in items],
        "stage": [stage] * len(items),
        "reason": [str(i[1]) for i in items],
        "detail": [None if i[2] is None else scrub(str(i[2]), secrets) for i in items],
    }, schema=QUARANTINE)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def from_samples(samples: pl.DataFrame, secrets: Iterable[str | None] = ()) -> pl.DataFrame:
    """One row per failed sample of an mc_samples partition, item ``<face_id>#<sample_index>``
    (the face itself is not dropped unless every sample fails; SV-UAMC decides that)."""
    failed = samples.filter(pl.col("parse_status") == "failed")
    return rows(((f"{r['face_id']}#{r.get('sample_index')}", PARSE_FAILURE,
                  f"round {r.get('round')}: {r.get('error') or 'unparseable'}")
                 for r in failed.iter_rows(named=True)), "mc_samples", secrets)


def from_labels(labels: pl.DataFrame, secrets: Iterable[str | None] = ()) -> pl.DataFrame:
    """One row per abstained face of a verified_labels partition; abstentions caused by
    disagreeing granularities get the ``inconsistent`` reason."""
    out = []
    for r in labels.filter(pl.col("status") == "abstained").iter_rows(named=True):
        flags = r.get("consistency_flags") or []
        why = r.get("abstain_reason") or ""
        reason = INCONSISTENT if (flags or "inconsisten" in why.lower()) else ABSTAINED
        detail = "; ".join(x for x in (why, ",".join(flags)) if x)
        out.append((r["face_id"], reason, detail or None))
    return rows(out, "verified_labels", secrets)


def concat(*frames: pl.DataFrame) -> pl.DataFrame:
    """Stack quarantine frames (empty input gives an empty QUARANTINE frame)."""
    frames = tuple(f for f in frames if f.height)
    return pl.concat(frames) if frames else rows([], "")
