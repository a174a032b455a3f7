"""The evaluation asset, materialized with a real temporary Dagster instance over a real lake."""

import polars as pl
from dagster import DagsterInstance, materialize

from assets.evaluation import evaluation
from resources.annotator import AnnotatorResource
from resources.lake import LakeResource
from seke.evaluate import read_evaluations
from seke.feab import build_feab
from seke.lake import Lake
from tests.seke.products_fixtures import make_faces


def test_evaluation_asset_stores_runs_and_renders_plots(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for batch in ("b1", "b2"):
        raw, labels = make_faces(n_subjects=6, per_subject=2, n_loose=12, batch=batch)
        lake.write_partition("feab", {"source": "ckplus", "batch": batch},
                             build_feab(labels, raw, fraction=0.5).drop("source", "batch"))
    instance = DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(uri=lake.uri), "annotator": AnnotatorResource(kind="offline")}
    for expression in ("neutral", "happiness"):
        cfg = {"ops": {"evaluation": {"config": {
            "annotator_spec": "seke.evaluate:constant_baseline", "checkpoint": "",
            "model_label": f"const-{expression}", "run_id": f"run-{expression}"}}}}
        result = materialize([evaluation], instance=instance, resources=resources, run_config=cfg)
        assert result.success
    mats = instance.fetch_materializations(evaluation.key, limit=10).records
    meta = mats[0].asset_materialization.metadata
    assert meta["confusion_matrix"].value.startswith("![confusion_matrix](data:image/png;base64,")
    assert meta["va_scatter"].value.startswith("![va_scatter](data:image/png;base64,")
    assert "const-neutral" in meta["comparison"].value and "const-happiness" in meta["comparison"].value
    assert meta["faces"].value == lake.read_table("feab")["face_id"].n_unique()
    ev = read_evaluations(lake)
    assert set(ev["run_id"]) == {"run-neutral", "run-happiness"}
    acc = dict(ev.filter((pl.col("metric") == "accuracy") & (pl.col("subset") == "all"))
                 .select("model", "value").iter_rows())
    feab = lake.read_table("feab").filter(pl.col("task") == "expression")
    assert acc["const-neutral"] == (feab["gold_expression"] == "neutral").mean()
