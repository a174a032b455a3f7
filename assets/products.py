"""``feid`` and ``feab``: instruction records and benchmark items from accepted labels."""

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.common import lake_partition, table_metadata
from assets.publish import Audited, Blocked, fail_blocked, publish
from expectations.checks import check_specs
from expectations.gates import evaluate
from assets.partitions import batches, one_batch_per_run
from resources.lake import LakeResource
from seke.feab import build_feab
from seke.feid import build_feid


def _accepted(labels: pl.DataFrame) -> int:
    return labels.filter(pl.col("status") == "accepted").height if labels.height else 0


def _inputs(store, part) -> tuple[pl.DataFrame, pl.DataFrame]:
    return store.read_partition("verified_labels", part), store.read_partition("raw_faces", part)


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["verified_labels", "raw_faces"], group_name="products",
       kinds={"parquet"}, check_specs=check_specs("feid", "feid", batches))
def feid(context: AssetExecutionContext, lake: LakeResource):
    """FEID: instruction–response records per accepted face (per granularity and combined, with
    a rationale citing AU evidence), origin and confidence kept; faces on the FEAB side of the
    subject-disjoint split are excluded."""
    part = lake_partition(context)
    store = lake.lake()
    labels, faces = _inputs(store, part)
    frame = build_feid(labels, faces).drop(["source", "batch"], strict=False)
    try:
        commits, results = publish(context, store, part,
                                   [Audited("feid", frame, evaluate("feid", frame, input_rows=_accepted(labels)))])
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    yield MaterializeResult(metadata={
        **table_metadata(frame, commits["feid"], ["face_id", "task", "instruction", "response", "origin", "confidence"]),
        "faces": MetadataValue.int(frame["face_id"].n_unique() if frame.height else 0),
        "records_per_task": MetadataValue.json(
            {t: int(n) for t, n in frame.group_by("task").len().iter_rows()} if frame.height else {}),
    }, check_results=results)


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["verified_labels", "raw_faces"], group_name="products",
       kinds={"parquet"}, check_specs=check_specs("feab", "feab", batches))
def feab(context: AssetExecutionContext, lake: LakeResource):
    """FEAB: held-out benchmark items (expression with options, VA, AUs) with gold answers and
    their origin; subject-disjoint from FEID wherever subject ids exist."""
    part = lake_partition(context)
    store = lake.lake()
    labels, faces = _inputs(store, part)
    frame = build_feab(labels, faces).drop(["source", "batch"], strict=False)
    try:
        commits, results = publish(context, store, part,
                                   [Audited("feab", frame, evaluate("feab", frame, input_rows=_accepted(labels)))])
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    yield MaterializeResult(metadata={
        **table_metadata(frame, commits["feab"], ["item_id", "task", "gold_expression", "gold_valence", "gold_origin", "gold_flagged"]),
        "items_per_task": MetadataValue.json(
            {t: int(n) for t, n in frame.group_by("task").len().iter_rows()} if frame.height else {}),
        "flagged_gold": MetadataValue.int(int(frame["gold_flagged"].sum() or 0) if frame.height else 0),
    }, check_results=results)
