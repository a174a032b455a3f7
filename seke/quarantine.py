"""Quarantine rows: every item a stage drops, with a machine-readable reason.

The quarantine lake table (``seke.schemas.QUARANTINE``: item_id, stage, reason, detail) is
hive-partitioned like the stage it comes from, so "what did we drop from ckplus/2026-11-22 and
why" is one DuckDB query. These helpers build those rows from the stage outputs; the assets
write them (one quarantine partition per stage partition, replaced on re-materialization).

Reasons (keep them short and stable; dashboards group on them): the ingest reasons of
:data:`INGEST_REASONS` (raw_faces, from :mod:`seke.faces` and :mod:`seke.manifest`; the README's
ingest section explains each), ``parse_failed`` (a sample whose
answer could not be parsed), ``abstained`` (SV-UAMC gave up), ``inconsistent`` (abstained
because the granularities disagree), ``review_unusable`` (a reviewer marked the face unusable),
``review_invalid`` (a review answer that failed validation), ``review_unknown_face`` (a review
task for a face id the batch does not have), ``review_contradictory`` (one reviewer's differing
answers to one face at one granularity, not counted), ``gate:<check>`` (a row named by a
failed blocking quality gate).

Details can quote server text (a failed sample's error); stages that talk to an endpoint pass
its ``secrets`` so that no piece of an API key is written (:func:`seke.scrub.scrub`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import polars as pl
import pyarrow as pa

from seke.schemas import QUARANTINE
from seke.scrub import scrub

# ---- raw_faces (ingest) -----------------------------------------------------------------------
# Files that never became a face:
UNREADABLE = "unreadable"            # not an image, a broken symlink, or not a regular file
TRUNCATED = "truncated"              # decoding stopped early
OVERSIZED = "oversized"              # file bytes (from os.stat, before reading) or pixels over budget
EXTREME_ASPECT = "extreme_aspect"    # width/height ratio over budget (checked from the header)
TOO_SMALL = "too_small"              # below the minimum side
BLANK_IMAGE = "blank_image"          # fully transparent, or one constant pixel value
NO_FACE = "no_face"                  # a photo where the detector finds none
NO_DETECTOR = "no_detector"          # a photo but no detector configured
PROCESSING_ERROR = "processing_error"  # a detector/model failure on one file
DUPLICATE = "duplicate"              # the same normalised crop was already seen in the batch
OUTSIDE_LANDING = "outside_landing"  # a symlink resolving outside the landing zone / allowed roots
SYMLINK_LOOP = "symlink_loop"        # a folder link to a folder already walked (cycles end here)
MISSING_FILE = "missing_file"        # a manifest row whose file never arrived
UNHASHABLE = "unhashable"            # imagehash could not read the crop (no perceptual hash)
# Manifest problems (the images still land; only labels are affected):
BAD_MANIFEST = "bad_manifest"        # empty, no ``image`` column, unparseable: every image unlabelled
MANIFEST_ENCODING = "manifest_encoding"  # a warning: not UTF-8, decoded by the declared fallback
BAD_LABEL = "bad_label"              # one human label invalid: that granularity is withheld
CONFLICTING_LABELS = "conflicting_labels"  # duplicate manifest rows disagree: granularity withheld
UNKNOWN_LICENCE = "unknown_licence"  # a warning: a licence key the register does not know (restricted)

#: Reasons about labels or the manifest, not about a dropped file (the face may still land).
LABEL_REASONS: tuple[str, ...] = (BAD_MANIFEST, MANIFEST_ENCODING, BAD_LABEL, CONFLICTING_LABELS,
                                  UNKNOWN_LICENCE)

#: Every reason raw_faces writes (the README's "Ingesting your own faces" documents them).
INGEST_REASONS: tuple[str, ...] = (
    UNREADABLE, TRUNCATED, OVERSIZED, EXTREME_ASPECT, TOO_SMALL, BLANK_IMAGE, NO_FACE, NO_DETECTOR,
    PROCESSING_ERROR, DUPLICATE, OUTSIDE_LANDING, SYMLINK_LOOP, MISSING_FILE, BAD_MANIFEST,
    MANIFEST_ENCODING, BAD_LABEL, CONFLICTING_LABELS, "review_unusable", UNHASHABLE, UNKNOWN_LICENCE,
)

# ---- later stages ------------------------------------------------------------------------------
PARSE_FAILURE = "parse_failed"
ABSTAINED = "abstained"
INCONSISTENT = "inconsistent"
REVIEW_UNUSABLE = "review_unusable"
REVIEW_INVALID = "review_invalid"
REVIEW_UNKNOWN_FACE = "review_unknown_face"      # a review task for a face id the batch never had
REVIEW_CONTRADICTORY = "review_contradictory"    # one reviewer gave two answers to one face


@dataclass
class Rejected:
    """One dropped item (or, for ``manifest_encoding``, one warning) with its reason."""

    item_id: str
    reason: str
    detail: str


def safe_text(value: object) -> str:
    """``str(value)`` that Arrow can always encode: lone surrogates (file names that were not
    valid UTF-8, decoded by ``os.fsdecode``'s surrogateescape) become backslash escapes."""
    s = str(value)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return s.encode("utf-8", "backslashreplace").decode("utf-8")


def rows(items: Iterable[tuple[str, str, str | None]], stage: str,
         secrets: Iterable[str | None] = ()) -> pl.DataFrame:
    """Quarantine frame (QUARANTINE schema) from ``(item_id, reason, detail)`` triples;
    ``secrets`` are scrubbed from the details."""
    items = list(items)
    secrets = tuple(secrets)
    table = pa.Table.from_pydict({
        "item_id": [safe_text(i[0]) for i in items],
        "stage": [stage] * len(items),
        "reason": [str(i[1]) for i in items],
        "detail": [None if i[2] is None else scrub(safe_text(i[2]), secrets) for i in items],
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
