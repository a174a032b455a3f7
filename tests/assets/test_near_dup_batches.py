"""Near-duplicates across batches, on the real asset graph (issue 16 item 3).

The assets split one batch at a time. Batch 1 lands the first frame of 15 CK+ sequences, batch 2
(same source, landed later) the next frame of the same sequences plus a re-encoded, resized copy
of one batch-1 face, all without subject ids, so nothing but the perceptual hash ties a batch-2
face to its batch-1 twin. Each batch alone has no near-duplicate pair, so a split that only
groups within the batch places batch 2 by its own stratified hash and puts twins on both sides;
the split must follow the side batch 1 published, and the blocking ``split_leakage`` check must
count cross-batch pairs.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, Definitions

from seke.lake import Lake
from seke.near_dup import PHASH_THRESHOLD, count_groups, cross_split, near_duplicate_groups

SOURCE = "ckseq"
EXPRESSIONS = ("happiness", "surprise", "sadness")   # 5 sequences each: FEAB takes 1 per stratum


def _land(shared: Path, landing: Path, batch: str, rows: pl.DataFrame, resized: str | None = None) -> None:
    folder = landing / SOURCE / batch
    (folder / "images").mkdir(parents=True)
    for name in rows["image"]:
        shutil.copy(shared / "ckplus" / name, folder / name)
    manifest = rows.drop("subject_id", "sequence")           # no subject ids: only the hash links twins
    if resized is not None:
        from PIL import Image

        with Image.open(shared / "ckplus" / resized) as img:   # 48×48 PNG → 56×56 JPEG, quality 90
            buf = io.BytesIO()
            img.convert("L").resize((56, 56), Image.BICUBIC).save(buf, "JPEG", quality=90)
        (folder / "images" / "resized_copy.jpg").write_bytes(buf.getvalue())
        src = rows.head(0).drop("subject_id", "sequence")
        extra = manifest.head(0).vstack(
            pl.read_csv(shared / "ckplus" / "manifest.csv").filter(pl.col("image") == resized)
            .drop("subject_id", "sequence").with_columns(pl.lit("images/resized_copy.jpg").alias("image"))
            .select(src.columns).cast(dict(src.schema)))
        manifest = manifest.vstack(extra)
    manifest.write_csv(folder / "manifest.csv")


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory, shared_data):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.landing import LandingZoneResource
    from resources.lake import LakeResource
    from resources.warehouse import WarehouseResource

    root = tmp_path_factory.mktemp("neardup")
    ck = pl.read_csv(shared_data / "ckplus" / "manifest.csv").sort("image")
    seqs = (ck.filter(pl.col("expression").is_in(EXPRESSIONS)).select("sequence", "expression").unique()
            .sort("sequence").group_by("expression", maintain_order=True).head(5)["sequence"])
    frames = ck.filter(pl.col("sequence").is_in(seqs.to_list())).with_columns(
        pl.int_range(pl.len()).over("sequence").alias("_frame"))
    first = frames.filter(pl.col("_frame") == 0).drop("_frame")
    second = frames.filter(pl.col("_frame") == 1).drop("_frame")
    _land(shared_data, root / "landing", "b1", first)
    _land(shared_data, root / "landing", "b2", second, resized=first["image"][0])

    resources = {"lake": LakeResource(uri=str(root / "lake")),
                 "landing": LandingZoneResource(path=str(root / "landing")),
                 "annotator": AnnotatorResource(kind="offline", seed=0),
                 "duckdb": WarehouseResource(path=str(root / "wh.duckdb"))}
    defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [f"{SOURCE}__b1", f"{SOURCE}__b2"])
    assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
    runs = {b: defs.resolve_job_def("annotate_batch").execute_in_process(
        instance=instance, partition_key=f"{SOURCE}__{b}", raise_on_error=False) for b in ("b1", "b2")}
    return {"lake": Lake(str(root / "lake")), "instance": instance, "runs": runs}


def test_batch_two_follows_the_side_batch_one_published_and_nothing_leaks(two_batches):
    lake, runs = two_batches["lake"], two_batches["runs"]
    assert runs["b1"].success and runs["b2"].success
    raw = lake.read_table("raw_faces").select("face_id", "phash", "batch")
    feid, feab = lake.read_table("feid"), lake.read_table("feab")
    sides = {**{f: "feid" for f in feid["face_id"]}, **{f: "feab" for f in feab["face_id"]}}
    assert set(feid["face_id"]).isdisjoint(feab["face_id"])
    assert set(feab["batch"]) == {"b1", "b2"}                    # both batches have benchmark faces
    # Recomputed here over the published faces of both batches, independently of the assets.
    ids = sorted(sides)
    codes = dict(raw.select("face_id", "phash").iter_rows())
    groups = near_duplicate_groups(ids, [codes[f] for f in ids], PHASH_THRESHOLD)
    batch_of = dict(raw.select("face_id", "batch").iter_rows())
    twins = {g for f, g in groups.items() if batch_of[f] == "b2"} & {g for f, g in groups.items() if batch_of[f] == "b1"}
    assert len(twins) >= 10                                     # most sequences' frames are within 6 bits
    assert cross_split(sides, groups) == []
    # batch 1 alone had no near-duplicate pair: the groups are cross-batch, and in the metadata
    inst = two_batches["instance"]
    for key in ("feid", "feab"):
        ev = inst.get_latest_materialization_event(AssetKey(key))
        assert ev.asset_materialization.partition == f"{SOURCE}__b2"
        md = ev.asset_materialization.metadata
        assert md["cross_batch_near_duplicate_groups"].value == len(twins)
        assert md["near_duplicate_groups"].value == count_groups(groups) >= len(twins)
        assert md["cross_split_near_duplicates"].value == 0
        checks = [e.event_specific_data for e in runs["b2"].all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"
                  and e.event_specific_data.check_name == "split_leakage"
                  and e.event_specific_data.asset_key == AssetKey(key)]
        assert len(checks) == 1 and checks[0].passed
        assert checks[0].metadata["cross_batch_near_duplicate_groups"].value == len(twins)
