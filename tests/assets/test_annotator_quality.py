"""The annotator_quality asset, materialized with a real ephemeral instance over a real lake."""

import os
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from seke import weights

SHARED = Path(os.environ.get("SEKE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))


def test_annotator_quality_asset_writes_figures(tmp_path):
    if not (SHARED / "ckplus" / "manifest.csv").exists():
        pytest.skip(f"shared data missing: {SHARED / 'ckplus'}")
    try:
        weights.path_of("face_landmarker.task")
    except weights.WeightsMissing as exc:
        pytest.skip(f"offline weights not fetched: {exc}")
    from assets.annotator_quality import annotator_quality
    from resources.data import DevDataResource
    from resources.lake import LakeResource
    from seke.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    cfg = {"ops": {"annotator_quality": {"config": {
        "data_dirs": [str(SHARED / "ckplus"), str(tmp_path / "nothing-here")], "limit": 30, "run_id": "t1"}}}}
    result = materialize([annotator_quality], instance=DagsterInstance.ephemeral(),
                         resources={"lake": LakeResource(uri=lake.uri), "dev_data": DevDataResource()}, run_config=cfg)
    assert result.success
    table = lake.read_table("annotator_quality")
    assert table.height == 1 and table["set"][0] == "ckplus" and table["n"][0] == 30
    assert 0 < table["au_f1_known"][0] <= 1 and 0 < table["expr_acc"][0] <= 1
