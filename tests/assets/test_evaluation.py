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
    """The `annotator` resource path (offline models) on real CK+ faces with human gold, scored
    against the class-prior baselines of the same faces."""
    import hashlib

    import pyarrow as pa

    from seke import metrics
    from seke.schemas import RAW_FACES, VERIFIED_LABELS, conform
    from seke.taxonomy import AU_CATALOGUE, au_column
    from tests.baselines import chance_bound, majority_rate

    # One face per posed sequence (the apex frame; a sequence's three frames share every label,
    # so they are one observation), every expression in the proportions CK+ has: 250 faces.
    man = pl.read_csv(shared_data / "ckplus" / "manifest.csv").group_by("sequence", maintain_order=True).last()
    raw, labels = [], []
    gold_aus: dict[str, list[int]] = {}
    for r in man.iter_rows(named=True):
        png = (shared_data / "ckplus" / r["image"]).read_bytes()
        fid = hashlib.sha256(png).hexdigest()
        aus = [a for a in AU_CATALOGUE if r.get(au_column(a)) == 1]
        gold_aus[fid] = aus
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
    n = dict(ev.select(pl.col("task") + "." + pl.col("metric"), "n_items").iter_rows())
    assert set(ev["backend"]) == {"offline"}
    # the offline annotator answers every one of these crops (the evaluate_set run on the same
    # faces fails none): a face without an answer is a regression, not noise
    assert val["expression.coverage"] == 1.0
    # Expression: beat always answering the commonest gold expression of these faces, by the
    # margin n justifies (a guesser at the prior rate passes with p < 1e-6, tests/baselines.py).
    # When written: 0.700 vs prior 0.264, bound 0.404 at n=250.
    gold = feab.filter(pl.col("task") == "expression")["gold_expression"].to_list()
    prior = majority_rate(gold)
    assert n["expression.accuracy"] == len(gold) == man.height
    assert val["expression.accuracy"] > chance_bound(prior, len(gold)), (val["expression.accuracy"], prior)
    # AUs: beat calling every AU present on every face (the AU class prior) on the same faces,
    # averaged over the AUs with a gold positive only (the annotator's mean also counts AUs it
    # predicted that gold never has, at F1 0, so the comparison favours the baseline). Only the
    # order is asserted (F1 has no binomial margin); when written 0.479 vs 0.291 over 22 AUs.
    coded = [a for a in AU_CATALOGUE if any(a in s for s in gold_aus.values())]
    all_present = metrics.mean_au_f1(list(gold_aus.values()), [coded] * len(gold_aus), coded)
    assert val["aus.mean_f1"] > all_present, (val["aus.mean_f1"], all_present)
    meta = instance.fetch_materializations(evaluation.key, limit=1).records[0].asset_materialization.metadata
    assert meta["confusion_matrix"].value.startswith("![confusion_matrix](data:image/png;base64,")
