"""``confidence_calibration`` materialized with a real Dagster instance on a real Parquet lake."""

from __future__ import annotations

import pyarrow as pa
from dagster import DagsterInstance, materialize

from assets.calibration import confidence_calibration
from seke.calibration import read_current_calibration
from resources.lake import LakeResource
from seke import schemas
from seke.annotation import PromptSpec
from seke.annotators.simulated import NoiseModel, SimulatedAnnotator, simulate_faces
from seke.audit import hide_for_audit
from seke.knowledge import knowledge_v1
from seke.lake import Lake
from seke.sv_uamc import SamplingConfig, run_sampling

KN = knowledge_v1()


def write_batch(lake: Lake, batch: str, seed: int, noise: NoiseModel) -> None:
    faces, truth = simulate_faces(120, KN, seed=seed, known=("expression", "aus"))
    raw = [{"face_id": f.face_id, "file_name": f"{i}.png", "face_index": 0, "crop_png": f.image_png,
            "known_expression": f.known.expression,
            "known_aus": sorted(a for a, p in f.known.aus.items() if p >= 0.5)} for i, f in enumerate(faces)]
    lake.write_partition("raw_faces", {"source": "sim", "batch": batch},
                         schemas.conform(pa.Table.from_pylist(raw), schemas.RAW_FACES))
    split = hide_for_audit(faces, 0.5, seed=1)
    prompts = {f.face_id: PromptSpec.make("t", [], f.known.missing_granularities()) for f in split.faces}
    res = run_sampling(split.faces, prompts, SimulatedAnnotator(truth, noise, seed=seed, knowledge=KN), KN,
                       SamplingConfig(), audit_hidden=split.hidden)
    lake.write_partition("verified_labels", {"source": "sim", "batch": batch},
                         schemas.conform(pa.Table.from_pylist(res.labels), schemas.VERIFIED_LABELS))


def test_calibration_asset_fits_stores_and_warns(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_batch(lake, "good", 1, NoiseModel())
    write_batch(lake, "bad", 2, NoiseModel(mode_error_base=0.9, mode_error_slope=0.0))
    result = materialize([confidence_calibration], instance=DagsterInstance.ephemeral(),
                         resources={"lake": LakeResource(uri=str(tmp_path / "lake"))})
    assert result.success
    mat = result.asset_materializations_for_node("confidence_calibration")[0]
    per_part = mat.metadata["audit_per_partition"].value
    assert set(per_part) == {"sim__good", "sim__bad"}
    assert per_part["sim__good"]["expression_accuracy"] > per_part["sim__bad"]["expression_accuracy"]
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 1 and not checks[0].passed
    assert set(checks[0].metadata["failing"].value) == {"sim__bad"}
    cal = read_current_calibration(lake)
    assert cal is not None and cal.version == mat.metadata["version"].value
    assert "expression" in cal.fitted_on and 0.0 <= cal.apply(0.7, "expression") <= 1.0
    assert lake.exists("calibration", {"version": cal.version})


def test_certificates_are_fitted_stored_plotted_and_refused_for_other_versions(tmp_path):
    from dagster import RunConfig

    from seke.selective import selective_acceptance
    from assets.calibration import CalibrationConfig
    from seke.selective import read_current_certificates

    lake = Lake(str(tmp_path / "lake"))
    write_batch(lake, "good", 1, NoiseModel())
    res = materialize([confidence_calibration], instance=DagsterInstance.ephemeral(),
                      resources={"lake": LakeResource(uri=str(tmp_path / "lake"))},
                      run_config=RunConfig({"confidence_calibration": CalibrationConfig(
                          expression_error=0.2, au_error=0.2, min_audit_faces=20, transfer={"unlabelled": "sim"})}))
    assert res.success
    md = res.asset_materializations_for_node("confidence_calibration")[0].metadata
    part = md["certified_per_partition"].value["sim__good"]
    assert part["expression"]["certified_bound"] == 0.2 and part["expression"]["audit_faces"] > 20
    assert {"realized_error_in_sample", "coverage", "threshold"} <= set(part["expression"])
    assert "data:image/png;base64," in md["risk_coverage"].value
    cset = read_current_certificates(lake)
    assert cset is not None and cset.version == md["certificates_version"].value
    versions = dict(next(c for c in cset.certificates if c.source == "sim").versions)
    acc, info = selective_acceptance(lake, "sim", versions, True)
    assert info["status"] == "applied" and acc is not None and not info["refused"]
    acc, info = selective_acceptance(lake, "sim", {**versions, "knowledge": "other"}, True)
    assert acc is None and "refused" in info["refused"][0]
    acc, info = selective_acceptance(lake, "wild", versions, True)
    assert acc is None and "no certificate for source 'wild'" in info["refused"][0]
    acc, info = selective_acceptance(lake, "unlabelled", versions, True)
    assert acc is not None and "transferred from sim, not measured" in info["applied"]["expression"]["bound"]


def test_bad_targets_and_no_audit_faces_certify_nothing_without_failing(tmp_path):
    from dagster import RunConfig

    from assets.calibration import CalibrationConfig

    lake = Lake(str(tmp_path / "lake"))
    write_batch(lake, "good", 1, NoiseModel())
    res = materialize([confidence_calibration], instance=DagsterInstance.ephemeral(),
                      resources={"lake": LakeResource(uri=str(tmp_path / "lake"))},
                      run_config=RunConfig({"confidence_calibration": CalibrationConfig(
                          expression_error=0.0, au_error=1.0, min_audit_faces=10_000)}))
    assert res.success
    md = res.asset_materializations_for_node("confidence_calibration")[0].metadata
    assert set(md["target_problems"].value) == {"expression", "aus"}
    assert md["certification"].value["sim/expression"]["status"] == "not certified"
    res = materialize([confidence_calibration], instance=DagsterInstance.ephemeral(),
                      resources={"lake": LakeResource(uri=str(tmp_path / "lake"))},
                      run_config=RunConfig({"confidence_calibration": CalibrationConfig(min_audit_faces=10_000)}))
    rep = res.asset_materializations_for_node("confidence_calibration")[0].metadata["certification"].value
    assert "too few audit faces" in rep["sim/expression"]["reason"]


def test_unreadable_certificate_artefact_is_refused_not_raised(tmp_path):
    import polars as pl

    from seke.selective import selective_acceptance

    lake = Lake(str(tmp_path / "lake"))
    lake.write_partition("certificates_current", {}, pl.DataFrame({"version": ["x"], "created_at": [""],
                                                                    "artefact_json": ["{not json"]}))
    acc, info = selective_acceptance(lake, "sim", {}, True)
    assert acc is None and info["status"] == "refused" and "unreadable" in info["refused"][0]
