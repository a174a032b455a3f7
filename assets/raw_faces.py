"""``raw_faces``: the batch folder's images as normalised face crops, bad files quarantined."""


import polars as pl
import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.common import lake_partition, table_metadata
from assets.publish import Audited, Blocked, fail_blocked, publish
from pipelines.partitions import batches, one_batch_per_run
from resources.landing import LandingZoneResource
from resources.lake import LakeResource
from expectations.checks import check_specs
from expectations.gates import evaluate
from seke import quarantine, schemas
from seke.faces import Rejected, default_detector, ingest_folder
from seke.review import merge_review_labels, unusable_ids


def crops_table(crops) -> pa.Table:
    rows = [{
        "face_id": c.face_id, "file_name": c.file_name, "face_index": c.face_index,
        "subject_id": c.known.subject_id, "split": c.known.split, "crop_png": c.crop_png,
        "crop_size": c.crop_size, "image_width": c.image_width, "image_height": c.image_height,
        "detector": c.detector, "det_score": c.det_score, "bbox": c.bbox,
        "known_expression": c.known.expression, "known_valence": c.known.valence,
        "known_arousal": c.known.arousal,
        "known_aus": list(c.known.aus) if c.known.aus is not None else None,
    } for c in crops]
    return pa.Table.from_pylist(rows, schema=schemas.RAW_FACES)


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, group_name="ingest", kinds={"parquet"}, deps=["review_labels"],
       check_specs=check_specs("raw_faces", "raw_faces", batches))
def raw_faces(context: AssetExecutionContext, lake: LakeResource,
              landing: LandingZoneResource):
    """Face crops of one ingest batch: photos are detected and cropped (BlazeFace), pre-cropped
    faces pass through; face_id = sha256 of the normalised crop; duplicates, unreadable,
    truncated, oversized and face-less files go to the quarantine table with a reason."""
    part = lake_partition(context)
    folder = landing.batch_dir(part["source"], part["batch"])
    crops, rejected = ingest_folder(folder, detector=default_detector())
    table = crops_table(crops)
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
    gates = evaluate("raw_faces", pl.from_arrow(table), input_rows=len(crops) + len(rejected))
    quarantined = quarantine.rows(((r.item_id, r.reason, r.detail) for r in rejected), "raw_faces")
    try:
        commits, results = publish(context, store, part, [Audited("raw_faces", table, gates)],
                                   side_tables=[("quarantine", {**part, "stage": "raw_faces"}, quarantined)])
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    reasons = pl.DataFrame({"reason": [r.reason for r in rejected]}, schema={"reason": pl.String})
    counts = {r: int(n) for r, n in reasons.group_by("reason").len().iter_rows()} if rejected else {}
    context.log.info(f"{len(crops)} faces from {folder}; quarantined {len(rejected)}: {counts}")
    yield MaterializeResult(metadata={
        **table_metadata(table, commits["raw_faces"]),
        "faces": MetadataValue.int(table.num_rows),
        "quarantined": MetadataValue.int(len(rejected)),
        "quarantine_reasons": MetadataValue.json(counts),
        "with_known_expression": MetadataValue.int(sum(c.known.expression is not None for c in crops)),
        "with_known_aus": MetadataValue.int(sum(c.known.aus is not None for c in crops)),
        "reviewed_faces_merged": MetadataValue.int(reviewed),
    }, check_results=results)
