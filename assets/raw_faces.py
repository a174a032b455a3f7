"""``raw_faces``: the batch folder's images as normalised face crops, bad files quarantined."""


import warnings

import polars as pl
import pyarrow as pa
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext,
                     MaterializeResult, MetadataValue, PreviewWarning, asset)

from assets.common import OWNERS, lake_partition, table_metadata, tags
from assets.publish import Audited, Blocked, fail_blocked, publish
from assets.partitions import batches, one_batch_per_run
from resources.landing import LandingZoneResource
from resources.lake import LakeResource
from expectations.checks import check_specs
from expectations.gates import evaluate
from seke import quarantine, schemas
from seke.faces import Rejected, default_detector, ingest_batch
from seke.licences import batch_licences
from seke.near_dup import count_groups, near_duplicate_groups
from seke.review import merge_review_labels, unusable_ids


def crops_table(crops, licences: list[str] | None = None) -> pa.Table:
    rows = [{
        "face_id": c.face_id, "file_name": c.file_name, "face_index": c.face_index,
        "subject_id": c.known.subject_id, "split": c.known.split, "crop_png": c.crop_png,
        "crop_size": c.crop_size, "image_width": c.image_width, "image_height": c.image_height,
        "detector": c.detector, "det_score": c.det_score, "bbox": c.bbox,
        "known_expression": c.known.expression, "known_valence": c.known.valence,
        "known_arousal": c.known.arousal,
        "known_aus": list(c.known.aus) if c.known.aus is not None else None,
        "invalid_labels": list(c.known.invalid),
        "phash": c.phash,
        "licence": licences[i] if licences is not None else c.known.licence,
    } for i, c in enumerate(crops)]
    return pa.Table.from_pylist(rows, schema=schemas.RAW_FACES)


MANIFEST_CHECK = "manifest"


def manifest_check_spec() -> AssetCheckSpec:
    with warnings.catch_warnings():  # per-partition check specs are a "preview" API in 1.13
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(MANIFEST_CHECK, asset="raw_faces", blocking=False, partitions_def=batches,
                              description="[warn] the batch manifest is UTF-8 CSV with an image column "
                                          "and every human label is valid and unambiguous (else its "
                                          "quarantine rows say which; the images still land)")


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, group_name="ingest", kinds={"delta"}, deps=["review_labels"],
       owners=OWNERS, tags=tags("ingest", pii=True),
       check_specs=check_specs("raw_faces", "raw_faces", batches) + [manifest_check_spec()])
def raw_faces(context: AssetExecutionContext, lake: LakeResource,
              landing: LandingZoneResource):
    """Face crops of one ingest batch: photos are detected and cropped (BlazeFace), pre-cropped
    faces pass through; face_id = sha256 of the normalised crop; duplicates, unreadable,
    truncated, oversized, blank and face-less files, symlinks leaving the landing zone and
    invalid or conflicting manifest labels and crops imagehash cannot read go to the quarantine
    table with a reason; every crop carries its perceptual hash (``phash``), and the number of
    near-duplicate groups is in the metadata. A face
    whose human label for a granularity was invalid lists it in ``invalid_labels`` (withheld:
    never generated)."""
    part = lake_partition(context)
    folder = landing.batch_dir(part["source"], part["batch"])
    ingested = ingest_batch(folder, detector=default_detector(), roots=landing.symlink_roots(),
                            subject_pattern=landing.subject_pattern(part["source"]))
    crops, rejected, manifest = ingested.crops, ingested.rejected, ingested.manifest
    licences, unknown_licences, licence_warnings = batch_licences([c.known.licence for c in crops], part["source"])
    rejected += unknown_licences
    for warning in licence_warnings:
        context.log.warning(warning)
    table = crops_table(crops, licences)
    store = lake.lake()
    reviewed = 0
    if store.exists("review_labels", part):
        # Human review answers become known labels; faces marked unusable are quarantined.
        review = store.read_partition("review_labels", part).drop(["source", "batch"])
        unusable = set(unusable_ids(review)) & set(table.column("face_id").to_pylist())
        merged = merge_review_labels(pl.from_arrow(table), review).filter(~pl.col("face_id").is_in(unusable))
        table = merged.to_arrow().cast(schemas.RAW_FACES)
        rejected += [Rejected(fid, quarantine.REVIEW_UNUSABLE, "marked unusable by a human reviewer")
                     for fid in sorted(unusable)]
        reviewed = review.height
    gates = evaluate("raw_faces", pl.from_arrow(table),
                     input_rows=len(crops) + sum(r.reason not in quarantine.LABEL_REASONS for r in rejected))
    quarantined = quarantine.rows(((r.item_id, r.reason, r.detail) for r in rejected), "raw_faces")
    try:
        commits, results = publish(context, store, part, [Audited("raw_faces", table, gates)],
                                   side_tables=[("quarantine", {**part, "stage": "raw_faces"}, quarantined)])
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    reasons = pl.DataFrame({"reason": [r.reason for r in rejected]}, schema={"reason": pl.String})
    counts = {r: int(n) for r, n in reasons.group_by("reason").len().iter_rows()} if rejected else {}
    context.log.info(f"{len(crops)} faces from {folder}; quarantined {len(rejected)}: {counts}")
    if not manifest.healthy:
        context.log.warning(f"manifest of {folder}: {manifest.summary()}")
    yield MaterializeResult(metadata={
        **table_metadata(table, commits["raw_faces"]),
        "faces": MetadataValue.int(table.num_rows),
        "quarantined": MetadataValue.int(len(rejected)),
        "quarantine_reasons": MetadataValue.json(counts),
        "with_known_expression": MetadataValue.int(sum(c.known.expression is not None for c in crops)),
        "with_known_aus": MetadataValue.int(sum(c.known.aus is not None for c in crops)),
        "reviewed_faces_merged": MetadataValue.int(reviewed),
        "manifest": MetadataValue.json(manifest.summary()),
        "faces_with_withheld_labels": MetadataValue.int(sum(bool(c.known.invalid) for c in crops)),
        "licences": MetadataValue.json({k: licences.count(k) for k in sorted(set(licences))}),
        "unknown_licences": MetadataValue.json(licence_warnings),
        "near_duplicate_groups": MetadataValue.int(count_groups(near_duplicate_groups(
            table.column("face_id").to_pylist(), table.column("phash").to_pylist()))),
    }, check_results=results
       + [AssetCheckResult(check_name=MANIFEST_CHECK, asset_key="raw_faces", passed=manifest.healthy,
                           severity=AssetCheckSeverity.WARN, metadata={
                               **{k: MetadataValue.text(str(v)) for k, v in manifest.summary().items()},
                               "issues": MetadataValue.json([{"item_id": quarantine.safe_text(i.item_id),
                                                              "reason": i.reason,
                                                              "detail": quarantine.safe_text(i.detail)}
                                                             for i in manifest.issues[:20]])})])
