"""The real asset graph, materialized with a real (temporary) Dagster instance on real faces
from ../shared/data plus generated bad files, with the offline annotator."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import DagsterInstance, Definitions

from seke.lake import Lake

from tests.badfiles import write_bad_files

KEY = "mixed__b1"
WEBP_IN_WILD = "images/facial-expressions_2868588k.jpg"


def _copy_rows(src: Path, dst: Path, rows: pl.DataFrame) -> pl.DataFrame:
    for name in rows["image"]:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, dst / name)
    return rows


def build_batch(shared: Path, batch: Path) -> dict:
    """A batch of 4 CK+ (2 subjects), 4 FER2013 and 3 wild faces (the WebP-named-.jpg among
    them), one duplicate, and the bad files of tests.badfiles."""
    ck = pl.read_csv(shared / "ckplus" / "manifest.csv")
    subjects = ck["subject_id"].unique(maintain_order=True)[:2]
    ck = ck.filter(pl.col("subject_id").is_in(subjects.to_list())).group_by("subject_id", maintain_order=True).head(2)
    fer = pl.read_csv(shared / "fer2013" / "manifest.csv").filter(pl.col("split") == "validation").head(4)
    wild = pl.read_csv(shared / "wild" / "manifest.csv")
    wild = pl.concat([wild.filter(pl.col("image") == WEBP_IN_WILD), wild.filter(pl.col("image") != WEBP_IN_WILD).head(2)])
    # Manifest rows are renamed per source so the three sets can share one folder.
    rows = []
    for name, df, cols in (("ckplus", ck, ck.columns), ("fer2013", fer, fer.columns), ("wild", wild, wild.columns)):
        for r in df.iter_rows(named=True):
            target = f"{name}/{Path(r['image']).name}"
            (batch / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared / name / r["image"], batch / target)
            rows.append({**{k: r.get(k) for k in ck.columns + ["split"] if k in r}, "image": target})
    manifest = pl.DataFrame(rows, infer_schema_length=None)
    manifest.write_csv(batch / "manifest.csv")
    shutil.copy(batch / rows[0]["image"], batch / "duplicate_of_first.png")
    expected_bad = write_bad_files(batch / "bad", batch / rows[0]["image"])
    return {"faces": len(rows), "bad": {f"bad/{k}": v for k, v in expected_bad.items()}}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory, shared_data):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.landing import LandingZoneResource
    from resources.lake import LakeResource
    from resources.warehouse import WarehouseResource

    root = tmp_path_factory.mktemp("graph")
    info = build_batch(shared_data, root / "landing" / "mixed" / "b1")
    resources = {"lake": LakeResource(uri=str(root / "lake")),
                 "landing": LandingZoneResource(path=str(root / "landing")),
                 "annotator": AnnotatorResource(kind="offline", seed=0),
                 "duckdb": WarehouseResource(path=str(root / "lake" / "warehouse.duckdb"))}
    defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [KEY])

    def run():
        assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
        r = defs.resolve_job_def("annotate_batch").execute_in_process(instance=instance, partition_key=KEY)
        assert r.success
        # the warehouse is unpartitioned and follows by automation; in-process, refresh it here
        assert defs.resolve_job_def("refresh_warehouse").execute_in_process(instance=instance).success
        return r

    first = run()
    lake = Lake(str(root / "lake"))
    snapshot = {t: (lake.read_table(t), lake.version(t))
                for t in ("raw_faces", "verified_labels", "feid", "feab", "mc_samples")}
    second = run()  # idempotent re-run of the same partition
    return {"root": root, "info": info, "first": first, "second": second, "snapshot": snapshot,
            "instance": instance}


def _table(m, name) -> pl.DataFrame:
    return Lake(str(m["root"] / "lake")).read_table(name)


def test_faces_land_and_bad_files_are_quarantined_with_reasons(materialized):
    faces = _table(materialized, "raw_faces")
    q = _table(materialized, "quarantine").filter(pl.col("stage") == "raw_faces")
    # Every real face plus the three odd-but-valid encodings lands once; the duplicate does not.
    assert faces.height == materialized["info"]["faces"] + 3
    assert faces["face_id"].n_unique() == faces.height
    reasons = dict(zip(q["item_id"].str.replace("#0", ""), q["reason"]))
    for name, reason in materialized["info"]["bad"].items():
        if reason:
            assert reasons.get(name) == reason, (name, reasons.get(name))
    assert reasons.get("duplicate_of_first.png") == "duplicate"
    assert set(faces["source"]) == {"mixed"} and set(faces["batch"]) == {"b1"}


def test_human_labels_are_carried_through_and_never_overwritten(materialized):
    faces = _table(materialized, "raw_faces").select("face_id", "known_expression", "known_aus")
    labels = _table(materialized, "verified_labels").join(faces, on="face_id")
    known = labels.filter(pl.col("known_expression").is_not_null())
    assert known.height >= 10
    assert (known["expression"] == known["known_expression"]).all()
    assert (known["expression_origin"] == "human").all()
    coded = labels.filter(pl.col("known_aus").is_not_null())
    assert coded.height == 4
    assert [sorted(a) for a in coded["aus"]] == [sorted(a) for a in coded["known_aus"]]


def test_label_values_are_in_range_and_in_the_taxonomy(materialized):
    from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

    labels = _table(materialized, "verified_labels")
    assert set(labels["status"]) <= {"accepted", "abstained"}
    assert set(labels["expression"].drop_nulls()) <= set(EXPRESSIONS)
    va = labels.select("valence", "arousal").drop_nulls()
    assert va.height > 0 and va.select((pl.all().abs() <= 1.0).all()).row(0) == (True, True)
    aus = labels["aus"].explode().drop_nulls()
    assert set(aus) <= set(AU_CATALOGUE)
    samples = _table(materialized, "mc_samples")
    assert samples.height >= labels.filter(pl.col("n_samples") > 0).height
    assert set(samples["backend"]) == {"offline"}
    s_va = samples.select("valence", "arousal").drop_nulls()
    assert s_va.select((pl.all().abs() <= 1.0).all()).row(0) == (True, True)


def test_feid_and_feab_are_written_and_disjoint(materialized):
    feid, feab = _table(materialized, "feid"), _table(materialized, "feab")
    assert feid.height > 0 and feab.height > 0           # disjointness of two non-empty sets
    assert set(feid["task"]) <= {"expression", "va", "aus", "combined"}
    assert not (set(feid["face_id"]) & set(feab["face_id"]))
    labels = _table(materialized, "verified_labels")
    accepted = set(labels.filter(pl.col("status") == "accepted")["face_id"])
    assert set(feid["face_id"]) <= accepted


def test_rerun_is_idempotent(materialized):
    lake = Lake(str(materialized["root"] / "lake"))
    for name, (before, version) in materialized["snapshot"].items():
        after = _table(materialized, name)
        assert after.height == before.height > 0, name
        assert lake.version(name) == version + 1, name          # one new commit, replacing
        assert len(lake.files(name)) == 1, (name, lake.files(name))
    a = _table(materialized, "verified_labels").sort("face_id")
    b = materialized["snapshot"]["verified_labels"][0].sort("face_id")
    assert a["expression"].to_list() == b["expression"].to_list()  # seeded: same answers


def test_warehouse_views_answer_sql(materialized):
    con = duckdb.connect(str(materialized["root"] / "lake" / "warehouse.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM verified_labels WHERE batch = 'b1'").fetchall()[0][0]
    assert n == _table(materialized, "verified_labels").height
    per_class = dict(con.execute("SELECT expression, count(*) FROM verified_labels GROUP BY 1").fetchall())
    want = _table(materialized, "verified_labels").group_by("expression").len()
    assert per_class == dict(want.iter_rows())


def test_every_materialization_has_row_count_and_schema_metadata(materialized):
    from dagster import AssetKey

    inst = materialized["instance"]
    for key in ("raw_faces", "knowledge_prompts", "mc_samples", "verified_labels", "feid", "feab"):
        ev = inst.get_latest_materialization_event(AssetKey(key))
        md = ev.asset_materialization.metadata
        assert "dagster/row_count" in md and "preview" in md, key
        assert md["table_version"].value >= 0 and md["table_uri"].value.endswith(key), key
        columns = [c.name for c in md["dagster/column_schema"].schema.columns]
        assert "face_id" in columns and "source" in columns, key       # the Columns tab
    plots = inst.get_latest_materialization_event(AssetKey("verified_labels")).asset_materialization.metadata
    assert {"va", "aus"} <= set(plots)                                  # images for the asset page
    assert plots["va"].value.startswith("![va](data:image/png;base64,")


def run_ckplus_batch(tmp_path: Path, shared: Path, n_faces: int, key: str, run_config: dict,
                     one_frame_per_sequence: bool = False):
    """Land ``n_faces`` CK+ faces, taken in turn from each expression (so a batch is never one
    class), as one batch and run knowledge + annotate_batch; ``one_frame_per_sequence`` takes
    the first frame of each sequence only (more sequences and subjects for the same n)."""
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.landing import LandingZoneResource
    from resources.lake import LakeResource
    from resources.warehouse import WarehouseResource

    source, batch_name = key.split("__")
    batch = tmp_path / "landing" / source / batch_name
    batch.mkdir(parents=True)
    ck = pl.read_csv(shared / "ckplus" / "manifest.csv")
    if one_frame_per_sequence:
        ck = ck.sort("image").unique("sequence", keep="first", maintain_order=True)
    ck = (ck
          .with_columns(pl.int_range(pl.len()).over("expression").alias("_turn"))
          .sort("_turn", "expression", "image").head(n_faces).drop("_turn"))
    for name in ck["image"]:
        (batch / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared / "ckplus" / name, batch / name)
    ck.write_csv(batch / "manifest.csv")
    resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                 "landing": LandingZoneResource(path=str(tmp_path / "landing")),
                 "annotator": AnnotatorResource(kind="offline"),
                 "duckdb": WarehouseResource(path=str(tmp_path / "wh.duckdb"))}
    defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [key])
    assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
    result = defs.resolve_job_def("annotate_batch").execute_in_process(
        instance=instance, partition_key=key, raise_on_error=False, run_config=run_config)
    return defs, instance, result


def test_blocking_consistency_gate_stops_feid_and_feab_in_the_same_run(tmp_path, shared_data):
    """A consistency floor no partition can meet fails the blocking check on verified_labels:
    FEID, FEAB and the warehouse must not run, the upstream tables still land."""
    _, _, result = run_ckplus_batch(tmp_path, shared_data, 3, "ckplus__gate",
                                    {"ops": {"annotate_faces": {"config": {"gate_consistency_floor": 1.01}}}})
    assert not result.success
    done = {m.asset_key.to_user_string() for m in result.asset_materializations_for_node("annotate_faces")}
    assert done == set()                                     # write-audit-publish: nothing published
    lake = Lake(str(tmp_path / "lake"))
    assert lake.exists("raw_faces") and lake.read_table("raw_faces").height == 3   # upstream landed
    for table in ("verified_labels", "mc_samples", "feid", "feab"):
        assert not lake.exists(table), table
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    rate = checks["consistency_rate"]
    assert not rate.passed and rate.severity.value == "ERROR"
    assert rate.metadata["published"].value is False
    # the blocked frame is kept for inspection, and holds the faces that would have landed
    kept = pl.read_parquet(rate.metadata["audit_location"].value)
    assert kept.height == 3 and "/_audit/verified_labels/source=ckplus/batch=gate/" in rate.metadata["audit_location"].value
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["annotate_faces"]


def test_audit_mode_reports_quality_and_feeds_calibration(tmp_path, shared_data):
    """Audit mode hides every human label of a CK+ batch; verified_labels metadata carries the
    comparison, the audit check runs, and the calibration job fits on those faces."""
    from dagster import AssetKey

    defs, instance, result = run_ckplus_batch(
        tmp_path, shared_data, 24, "ckplus__audit",
        {"ops": {"knowledge_prompts": {"config": {"audit_fraction": 1.0}}}}, one_frame_per_sequence=True)
    assert result.success
    labels = Lake(str(tmp_path / "lake")).read_table("verified_labels")
    assert (labels["audit_hidden"].list.len() > 0).all()
    assert (labels["expression_origin"] != "human").all()  # hidden: generated, not copied
    md = instance.get_latest_materialization_event(AssetKey("verified_labels")).asset_materialization.metadata
    audit = md["audit"].value
    assert audit["audit_faces"] == labels.height
    # a baseline measured on the same faces: always answering the batch's commonest gold class
    gold = Lake(str(tmp_path / "lake")).read_table("raw_faces")["known_expression"].drop_nulls()
    majority = gold.value_counts(sort=True)["count"][0] / gold.len()
    assert audit["expression_accuracy"] > majority, (audit["expression_accuracy"], majority)
    # AUs against a baseline on the same faces, not a fixed floor: the best constant answer
    # (every AU that occurs in the batch's gold, on every face — the per-AU class prior). The
    # gain must be positive in 95 % of resamples of whole subjects (tests/baselines.py); the
    # batch takes one frame per sequence so its 24 faces span 10 subjects (three frames of
    # eight sequences gave 5). With 10 subjects the 1 % tail is made of resamples repeating two
    # or three subjects, hence 95 %, one-sided. A model that reads no evidence fails even when
    # the batch happens to be AU-rich.
    import numpy as np

    from seke.taxonomy import AU_CATALOGUE
    from tests.baselines import bootstrap_gain_bounds, f1_columns

    raw = Lake(str(tmp_path / "lake")).read_table("raw_faces").select(
        "face_id", "known_aus", "subject_id")
    au = (labels.filter((pl.col("status") == "accepted") & pl.col("aus").is_not_null())
          .select("face_id", "aus").join(raw, on="face_id").filter(pl.col("known_aus").is_not_null()))
    gold_au = np.array([[a in set(g) for a in AU_CATALOGUE] for g in au["known_aus"]])
    pred_au = np.array([[a in set(p) for a in AU_CATALOGUE] for p in au["aus"]])
    used = gold_au.any(0) | pred_au.any(0)          # the AUs seke.metrics.mean_au_f1 averages
    gold_au, pred_au = gold_au[:, used], pred_au[:, used]
    prior = np.broadcast_to(gold_au.any(0), gold_au.shape)
    assert f1_columns(pred_au, gold_au).mean() == pytest.approx(audit["au_mean_f1"], abs=1e-6)
    assert au["subject_id"].null_count() == 0
    gains = bootstrap_gain_bounds(pred_au, prior, gold_au, au["subject_id"].to_list())
    assert np.quantile(gains, 0.05) > 0, (audit["au_mean_f1"], f1_columns(prior, gold_au).mean(),
                                          np.quantile(gains, [0.05, 0.5]), au["subject_id"].n_unique())
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["audit_quality"].passed
    cal = defs.resolve_job_def("refit_calibration").execute_in_process(
        instance=instance, run_config={"ops": {"confidence_calibration": {"config": {"min_pairs": 10}}}})
    assert cal.success
    from seke.calibration import read_current_calibration

    fitted = read_current_calibration(Lake(str(tmp_path / "lake")))
    accepted = labels.filter(pl.col("status") == "accepted").height
    assert fitted is not None and fitted.fitted_on["expression"] == accepted   # fitted on the audited faces


def test_crops_carry_a_phash_and_products_pass_the_split_leakage_check(materialized):
    from dagster import AssetKey

    raw = _table(materialized, "raw_faces")
    assert raw["phash"].null_count() == 0 and raw["phash"].str.len_chars().unique().to_list() == [16]
    inst = materialized["instance"]
    md = inst.get_latest_materialization_event(AssetKey("raw_faces")).asset_materialization.metadata
    assert md["near_duplicate_groups"].value >= 1   # the two frames of each CK+ sequence
    for key in ("feid", "feab"):
        md = inst.get_latest_materialization_event(AssetKey(key)).asset_materialization.metadata
        assert md["near_duplicate_groups"].value >= 1 and md["cross_split_near_duplicates"].value == 0
        checks = [e.event_specific_data for e in materialized["second"].all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"
                  and e.event_specific_data.check_name == "split_leakage"
                  and e.event_specific_data.asset_key == AssetKey(key)]
        assert len(checks) == 1 and checks[0].passed
