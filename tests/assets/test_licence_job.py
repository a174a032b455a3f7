"""A misspelt manifest licence on the real job (issue 16, bad input): ``CC-BY-4.O`` (letter O)
is not in the licence register, so its faces land restricted, the ``raw_faces`` step logs a
warning naming it, the quarantine table holds a warning row for it, and an export without
``--allow-restricted`` embeds none of their images while it embeds the correctly licensed ones."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil

import polars as pl
from dagster import AssetKey, DagsterInstance, Definitions

from seke.cli import main
from seke.exports import load_json, missing_images
from seke.lake import Lake
from seke.licences import is_restricted, load_register

KEY = "mine__b1"
TYPO = "CC-BY-4.O"


def test_misspelt_licence_is_restricted_warned_and_withheld_from_export(tmp_path, shared_data):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.landing import LandingZoneResource
    from resources.lake import LakeResource
    from resources.warehouse import WarehouseResource

    batch = tmp_path / "landing" / "mine" / "b1"
    (batch / "images").mkdir(parents=True)
    # 8 CK+ faces of 8 different sequences, no subject ids (all FEID at fraction 0.2: 2 per
    # expression), half licensed CC-BY-4.0 and half with the typo.
    ck = (pl.read_csv(shared_data / "ckplus" / "manifest.csv").unique("sequence", keep="first")
          .sort("image").group_by("expression", maintain_order=True).head(2).head(8))
    for name in ck["image"]:
        shutil.copy(shared_data / "ckplus" / name, batch / name)
    licences = ["CC-BY-4.0", TYPO] * (ck.height // 2)
    ck.drop("subject_id", "sequence").with_columns(pl.Series("licence", licences)).write_csv(batch / "manifest.csv")

    resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                 "landing": LandingZoneResource(path=str(tmp_path / "landing")),
                 "annotator": AnnotatorResource(kind="offline", seed=0),
                 "duckdb": WarehouseResource(path=str(tmp_path / "wh.duckdb"))}
    defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [KEY])
    assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
    result = defs.resolve_job_def("annotate_batch").execute_in_process(instance=instance, partition_key=KEY)
    assert result.success

    # the raw_faces step warns, naming the misspelt licence
    warnings = [r.user_message for r in instance.all_logs(result.run_id)
                if r.level == logging.WARNING and r.step_key == "raw_faces"]
    named = [w for w in warnings if w and "'cc-by-4.o'" in w.lower()]
    assert named and "restricted" in named[0]
    md = instance.get_latest_materialization_event(AssetKey("raw_faces")).asset_materialization.metadata
    assert any("cc-by-4.o" in w.lower() for w in md["unknown_licences"].value)

    lake = Lake(str(tmp_path / "lake"))
    raw = lake.read_table("raw_faces")
    register = load_register()
    typo = set(raw.filter(pl.col("licence") == TYPO.lower())["face_id"])
    ok = set(raw.filter(pl.col("licence") == "cc-by-4.0")["face_id"])
    assert len(typo) == len(ok) == ck.height // 2
    assert is_restricted(TYPO.lower(), register) and not is_restricted("cc-by-4.0", register)
    q = lake.read_table("quarantine")
    assert q.filter((pl.col("item_id") == "licence:cc-by-4.o") & (pl.col("reason") == "unknown_licence")).height == 1

    out, err = tmp_path / "export", io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", "--lake", lake.uri, "--out", str(out), "--format", "llava"]) == 0
    assert "'cc-by-4.o'" in err.getvalue().lower()
    records = load_json(out / "llava" / "llava.json")
    withheld = [r for r in records if r["seke"]["face_id"] in typo]
    embedded = [r for r in records if r["seke"]["face_id"] in ok]
    assert withheld and embedded
    assert all(r["seke"].get("image_withheld") for r in withheld)
    assert len(missing_images(withheld, out / "llava")) == len(withheld)   # no restricted file written
    assert missing_images(embedded, out / "llava") == []                    # open images embedded
    assert {p.stem for p in (out / "llava" / "images").glob("*.png")}.isdisjoint(typo)
