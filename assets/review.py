"""``review_queue`` and ``review_labels``: the human-review loop through Label Studio.

``review_queue`` writes, per batch, a Label Studio import file of the abstained faces (image +
pre-annotations at the three granularities) and the project's labeling config. Reviewers
export their project as JSON into ``<review_dir>/exports/``; ``review_labels`` ingests every
export there into the ``review_labels`` lake table (this batch's faces only), and ``raw_faces``
merges those labels into its ``known_*`` columns (:func:`seke.review.merge_review_labels`), so
reviewed faces flow through prompts, SV-UAMC and FEID/FEAB again as human knowledge. Face ids
never change, so prompts and cached samples of unreviewed granularities are reused.
"""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import OWNERS, lake_partition, table_metadata, tags
from assets.partitions import batches, one_batch_per_run
from resources.data import ReviewResource
from resources.lake import LakeResource
from seke import quarantine, review


class ReviewConfig(Config):
    image_mode: str = Field("data_url", description="data_url | local_files (Label Studio local storage)")


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["verified_labels", "raw_faces"], group_name="review",
       kinds={"json"}, owners=OWNERS, tags=tags("review", pii=True))
def review_queue(context: AssetExecutionContext, config: ReviewConfig, lake: LakeResource,
                 review_dir: ReviewResource) -> MaterializeResult:
    """Label Studio import file (tasks.json + labeling_config.xml) of the batch's abstained
    faces, pre-annotated with the annotator's candidate expression, valence/arousal and AUs."""
    part = lake_partition(context)
    store = lake.lake()
    labels = store.read_partition("verified_labels", part)
    faces = store.read_partition("raw_faces", part)
    folder = Path(review_dir.path) / "queue" / f"{part['source']}__{part['batch']}"
    tasks = review.export_tasks(labels, faces, source=part["source"], batch=part["batch"],
                                image_mode=config.image_mode, image_dir=folder / "images")
    path = review.write_tasks(tasks, folder / "tasks.json")
    (folder / "labeling_config.xml").write_text(review.labeling_config(), encoding="utf-8")
    reasons = (labels.filter(pl.col("status") == "abstained").group_by("abstain_reason").len()
               if labels.height else pl.DataFrame())
    return MaterializeResult(metadata={
        "tasks": MetadataValue.int(len(tasks)),
        "path": MetadataValue.path(str(path)),
        "labeling_config": MetadataValue.path(str(folder / "labeling_config.xml")),
        "abstain_reasons": MetadataValue.json({str(r): int(n) for r, n in reasons.iter_rows()}
                                              if reasons.height else {}),
    })


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, group_name="ingest", kinds={"delta"},
       owners=OWNERS, tags=tags("ingest"))
def review_labels(context: AssetExecutionContext, lake: LakeResource, review_dir: ReviewResource) -> MaterializeResult:
    """Human labels for this batch from the Label Studio exports in <review_dir>/exports/
    (newest annotation per face wins); invalid answers go to quarantine with the reason."""
    part = lake_partition(context)
    store = lake.lake()
    exports = sorted((Path(review_dir.path) / "exports").glob("*.json"))
    imported = review.import_exports(exports)
    frame = imported.partitions.get((part["source"], part["batch"]))
    if frame is None:
        frame = pl.from_arrow(review.REVIEW_LABELS.empty_table())
    path = store.write_partition("review_labels", part, frame)
    mine = [e for e in imported.errors if (e.source, e.batch) == (part["source"], part["batch"])]
    bad = quarantine.rows(((e.face_id or str(e.task_id), quarantine.REVIEW_INVALID, e.error)
                           for e in mine), "review_labels")
    store.write_partition("quarantine", {**part, "stage": "review_labels"}, bad)
    for e in imported.errors:
        if e.source is None:  # unreadable file or task without a partition: not this batch's
            context.log.warning(f"review export problem ({e.task_id}): {e.error}")
    if mine:
        context.log.warning(f"{len(mine)} review tasks of this batch rejected: {[e.error for e in mine][:5]}")
    return MaterializeResult(metadata={
        **table_metadata(frame, path, ["face_id", "expression", "valence", "arousal", "aus", "unusable", "reviewer"]),
        "export_files": MetadataValue.int(len(exports)),
        "reviewed_faces": MetadataValue.int(frame.height),
        "unusable": MetadataValue.int(len(review.unusable_ids(frame))),
        "rejected_tasks": MetadataValue.int(len(mine)),
    })
