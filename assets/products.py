"""``feid`` and ``feab``: instruction records and benchmark items from accepted labels."""

import warnings

import polars as pl
import pyarrow.compute as pc
from dagster import (AssetCheckSpec, AssetExecutionContext, MaterializeResult, MetadataValue,
                     PreviewWarning, asset)

from assets.common import OWNERS, lake_partition, table_metadata, tags
from assets.publish import Audited, Blocked, fail_blocked, publish
from expectations.checks import check_specs
from assets.partitions import batches, one_batch_per_run
from expectations.gates import SPLIT_LEAKAGE, SPLIT_LEAKAGE_DESCRIPTION, evaluate, split_leakage_gate
from resources.lake import LakeResource
from seke.feab import assign_split, build_feab, published_faces
from seke.feid import build_feid


def _accepted(labels: pl.DataFrame) -> int:
    return labels.filter(pl.col("status") == "accepted").height if labels.height else 0


def _inputs(store, part) -> tuple[pl.DataFrame, pl.DataFrame]:
    return store.read_partition("verified_labels", part), store.read_partition("raw_faces", part)


def _leakage_spec(asset_key: str) -> AssetCheckSpec:
    with warnings.catch_warnings():  # per-partition check specs are a "preview" API in 1.13
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(SPLIT_LEAKAGE, asset=asset_key, blocking=True, partitions_def=batches,
                              description=f"[blocking] {SPLIT_LEAKAGE_DESCRIPTION}")


def _other_batches(store, table: str, part: dict, columns: list[str]) -> pl.DataFrame:
    """``columns`` of ``table`` in the partition's source, every batch but its own."""
    if not store.exists(table):
        return pl.DataFrame()
    where = (pc.field("source") == part["source"]) & (pc.field("batch") != part["batch"])
    frame = pl.from_arrow(store.dataset(table).to_table(columns=columns, filter=where))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _published(store, part) -> pl.DataFrame:
    """Faces other batches of the source already published in FEID/FEAB, with their phash and
    side (:func:`seke.feab.published_faces`), so the split keeps near-duplicates across batches
    on one side."""
    return published_faces(_other_batches(store, "feid", part, ["face_id"]),
                           _other_batches(store, "feab", part, ["face_id"]),
                           _other_batches(store, "raw_faces", part, ["face_id", "phash"]))


def _split(labels: pl.DataFrame, faces: pl.DataFrame, published: pl.DataFrame):
    """The partition's FEID/FEAB split (subjects and near-duplicates on one side, also those
    of faces other batches published) and its leakage gate; both products build from this
    same split."""
    split = assign_split(labels, faces, published=published)
    return split, split_leakage_gate(split, faces, published=published)


def _split_metadata(gate) -> dict:
    m = gate.metadata
    return {"near_duplicate_groups": MetadataValue.int(int(m["near_duplicate_groups"])),
            "cross_batch_near_duplicate_groups": MetadataValue.int(int(m["cross_batch_near_duplicate_groups"])),
            "cross_split_near_duplicates": MetadataValue.int(int(m["cross_split_near_duplicate_groups"]))}


def _build_and_publish(context: AssetExecutionContext, lake: LakeResource, table: str, build):
    """Split the batch's accepted faces, build ``table`` from its side, audit and publish it
    (raises :class:`Blocked` when a blocking check fails)."""
    part = lake_partition(context)
    store = lake.lake()
    labels, faces = _inputs(store, part)
    split, leakage = _split(labels, faces, _published(store, part))
    frame = build(split, faces).drop(["source", "batch"], strict=False)
    gates = evaluate(table, frame, input_rows=_accepted(labels)) + [leakage]
    commits, results = publish(context, store, part, [Audited(table, frame, gates)])
    return frame, commits[table], results, leakage


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["verified_labels", "raw_faces"], group_name="products",
       kinds={"delta"}, owners=OWNERS, tags=tags("products", pii=True),
       check_specs=check_specs("feid", "feid", batches) + [_leakage_spec("feid")])
def feid(context: AssetExecutionContext, lake: LakeResource):
    """FEID: instruction–response records per accepted face (per granularity and combined, with
    a rationale citing AU evidence), origin and confidence kept; faces on the FEAB side of the
    subject- and near-duplicate-disjoint split are excluded (blocking check ``split_leakage``)."""
    try:
        frame, commit, results, leakage = _build_and_publish(context, lake, "feid", build_feid)
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    yield MaterializeResult(metadata={
        **table_metadata(frame, commit, ["face_id", "task", "instruction", "response", "origin", "confidence"]),
        "faces": MetadataValue.int(frame["face_id"].n_unique() if frame.height else 0),
        "records_per_task": MetadataValue.json(
            {t: int(n) for t, n in frame.group_by("task").len().iter_rows()} if frame.height else {}),
        **_split_metadata(leakage),
    }, check_results=results)


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["verified_labels", "raw_faces"], group_name="products",
       kinds={"delta"}, owners=OWNERS, tags=tags("products", pii=True),
       check_specs=check_specs("feab", "feab", batches) + [_leakage_spec("feab")])
def feab(context: AssetExecutionContext, lake: LakeResource):
    """FEAB: held-out benchmark items (expression with options, VA, AUs) with gold answers and
    their origin; subject-disjoint from FEID wherever subject ids exist, and near-duplicate
    crops (perceptual hash) never on both sides (blocking check ``split_leakage``)."""
    try:
        frame, commit, results, leakage = _build_and_publish(context, lake, "feab", build_feab)
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    yield MaterializeResult(metadata={
        **table_metadata(frame, commit, ["item_id", "task", "gold_expression", "gold_valence", "gold_origin", "gold_flagged"]),
        "items_per_task": MetadataValue.json(
            {t: int(n) for t, n in frame.group_by("task").len().iter_rows()} if frame.height else {}),
        "flagged_gold": MetadataValue.int(int(frame["gold_flagged"].sum() or 0) if frame.height else 0),
        **_split_metadata(leakage),
    }, check_results=results)
