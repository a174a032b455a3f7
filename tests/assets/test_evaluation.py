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
    acc = dict(ev.filter((pl.col("metric") == "accuracy") & (pl.col("subset") == "human"))
                 .select("model", "value").iter_rows())
    assert ev.filter((pl.col("metric") == "accuracy") & (pl.col("subset") != "human")).height == 0
    feab = lake.read_table("feab").filter((pl.col("task") == "expression") & ~pl.col("gold_flagged"))
    assert acc["const-neutral"] == (feab["gold_expression"] == "neutral").mean()


def test_evaluation_asset_with_the_offline_annotator_on_real_faces(tmp_path, shared_data):
    """The `annotator` resource path (offline models) on 24 real CK+ faces with human gold."""
    import hashlib

    import pyarrow as pa

    from seke.schemas import RAW_FACES, VERIFIED_LABELS, conform
    from seke.taxonomy import AU_CATALOGUE, au_column

    man = pl.read_csv(shared_data / "ckplus" / "manifest.csv").head(24)
    raw, labels = [], []
    for r in man.iter_rows(named=True):
        png = (shared_data / "ckplus" / r["image"]).read_bytes()
        fid = hashlib.sha256(png).hexdigest()
        aus = [a for a in AU_CATALOGUE if r.get(au_column(a)) == 1]
        raw.append({"face_id": fid, "subject_id": r["subject_id"], "crop_png": png,
                    "known_expression": r["expression"], "known_aus": aus})
        labels.append({"face_id": fid, "subject_id": r["subject_id"], "status": "accepted",
                       "expression": r["expression"], "expression_origin": "human"})
    raw_df = pl.from_arrow(conform(pa.Table.from_pylist(raw), RAW_FACES))
    lab_df = pl.from_arrow(conform(pa.Table.from_pylist(labels), VERIFIED_LABELS))
    lake = Lake(str(tmp_path / "lake"))
    feab = build_feab(lab_df, raw_df, fraction=1.0)
    lake.write_partition("feab", {"source": "ckplus", "batch": "b1"}, feab)
    instance = DagsterInstance.ephemeral()
    result = materialize([evaluation], instance=instance,
                         resources={"lake": LakeResource(uri=lake.uri),
                                    "annotator": AnnotatorResource(kind="offline", seed=0)},
                         run_config={"ops": {"evaluation": {"config": {"run_id": "offline-1"}}}})
    assert result.success
    ev = read_evaluations(lake).filter(pl.col("subset") == "human")
    val = dict(ev.select(pl.col("task") + "." + pl.col("metric"), "value").iter_rows())
    assert val["expression.coverage"] > 0.9
    assert 0.0 <= val["expression.accuracy"] <= 1.0 and 0.0 <= val["aus.mean_f1"] <= 1.0
    assert set(ev["backend"]) == {"offline"}
    meta = instance.fetch_materializations(evaluation.key, limit=1).records[0].asset_materialization.metadata
    assert meta["confusion_matrix"].value.startswith("![confusion_matrix](data:image/png;base64,")
