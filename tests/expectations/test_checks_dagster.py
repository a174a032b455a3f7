"""Real Dagster runs of a two-asset graph using the check glue.

``labels`` writes a verified_labels partition with :class:`seke.lake.Lake` and emits its gates
from the asset body; ``products`` (standing in for FEID/FEAB) reads it back and writes its own
table. A failed blocking gate must stop ``products`` in the same run; a failed WARN gate must not.
"""


from pathlib import Path

import dagster as dg
import pytest

from expectations.checks import check_results, check_specs
from seke.lake import Lake
from tests.expectations import frames as F

PARTS = dg.StaticPartitionsDefinition(["clean", "warn_only", "broken_va", "duplicate_ids"])


def _partition_frame(key: str):
    rows = F.label_rows()
    if key == "warn_only":
        rows[0]["valence"] = -0.8          # happiness with negative valence: inconsistent
    elif key == "broken_va":
        rows[3]["valence"] = 1.7           # out of range
    elif key == "duplicate_ids":
        rows[5]["face_id"] = rows[4]["face_id"]
    return F.verified_labels(rows)


def _defs(lake_dir: Path) -> list[dg.AssetsDefinition]:
    lake = Lake(str(lake_dir))

    @dg.asset(partitions_def=PARTS,
              check_specs=check_specs("verified_labels", "labels", PARTS))
    def labels(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        frame = _partition_frame(context.partition_key)
        part = {"source": "toy", "batch": context.partition_key}
        lake.write_partition("verified_labels", part, frame)
        return dg.MaterializeResult(metadata={"rows": frame.height},
                                    check_results=check_results("verified_labels", frame,
                                                                input_rows=10))

    @dg.asset(partitions_def=PARTS, deps=[labels])
    def products(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        part = {"source": "toy", "batch": context.partition_key}
        frame = lake.read_partition("verified_labels", part)
        lake.write_partition("feid", part, frame.filter(frame["status"] == "accepted"))
        return dg.MaterializeResult(metadata={"rows": frame.height})

    return [labels, products]


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _run(tmp_path: Path, instance: dg.DagsterInstance, key: str):
    assets = _defs(tmp_path / "lake")
    result = dg.materialize(assets, instance=instance, partition_key=key, raise_on_error=False)
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    return result, evals, materialized


def test_clean_partition_runs_through(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    result, evals, materialized = _run(tmp_path, instance, "clean")
    assert result.success
    assert materialized == {"labels", "products"}
    assert evals and all(e.passed for e in evals.values())
    assert set(evals) >= {"gx_verified_labels", "label_ranges", "consistency_rate",
                          "consistency_expression_va"}
    assert Lake(str(tmp_path / "lake")).exists("feid", {"source": "toy", "batch": "clean"})
    # the check results were recorded per partition in the instance
    key = dg.AssetCheckKey(dg.AssetKey("labels"), "label_ranges")
    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert rec is not None and rec.status.value == "SUCCEEDED"


def test_warn_failure_does_not_block(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    result, evals, materialized = _run(tmp_path, instance, "warn_only")
    assert result.success
    assert materialized == {"labels", "products"}
    va = evals["consistency_expression_va"]
    assert not va.passed and va.severity == dg.AssetCheckSeverity.WARN
    assert va.metadata["unexpected_ids"].value == [F.face_id(0)]


@pytest.mark.parametrize("key,check", [("broken_va", "label_ranges"),
                                       ("duplicate_ids", "gx_verified_labels")])
def test_blocking_failure_stops_downstream(tmp_path: Path, instance: dg.DagsterInstance,
                                           key: str, check: str) -> None:
    result, evals, materialized = _run(tmp_path, instance, key)
    assert not result.success
    failed = evals[check]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["unexpected_ids"].value
    assert "products" not in materialized
    # the gate fails the labels step after its materialization was recorded, so products
    # never starts and its lake partition is never written
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert started == {"labels"}
    assert [e.step_key for e in failures] == ["labels"]
    assert "blocking" in failures[0].step_failure_data.error.message.lower()
    assert check in failures[0].step_failure_data.error.message
    assert not Lake(str(tmp_path / "lake")).exists("feid", {"source": "toy", "batch": key})


def _multi_defs(lake_dir: Path) -> list:
    """The real graph's shape: one step writes mc_samples and verified_labels (a multi-asset),
    each with its own gates; products depends on verified_labels."""
    lake = Lake(str(lake_dir))
    specs = check_specs("mc_samples", "samples", PARTS) + check_specs("verified_labels", "labels", PARTS)

    @dg.multi_asset(specs=[dg.AssetSpec("samples"), dg.AssetSpec("labels", deps=["samples"])],
                    partitions_def=PARTS, check_specs=specs, can_subset=False)
    def annotate(context: dg.AssetExecutionContext):
        key = context.partition_key
        samples = F.mc_samples(failed_share=0.4 if key == "warn_only" else 0.0)
        labels = F.verified_labels() if key in ("clean", "warn_only") else _partition_frame(key)
        part = {"source": "toy", "batch": key}
        lake.write_partition("mc_samples", part, samples)
        lake.write_partition("verified_labels", part, labels)
        yield dg.MaterializeResult(asset_key="samples", check_results=check_results(
            "mc_samples", samples, input_rows=5, asset_key="samples"))
        yield dg.MaterializeResult(asset_key="labels", check_results=check_results(
            "verified_labels", labels, input_rows=10, asset_key="labels"))

    @dg.asset(partitions_def=PARTS, deps=["labels"])
    def products(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        part = {"source": "toy", "batch": context.partition_key}
        lake.write_partition("feid", part, lake.read_partition("verified_labels", part))
        return dg.MaterializeResult()

    return [annotate, products]


@pytest.mark.parametrize("key,ok", [("warn_only", True), ("broken_va", False)])
def test_multi_asset_gates(tmp_path: Path, instance: dg.DagsterInstance, key: str, ok: bool) -> None:
    result = dg.materialize(_multi_defs(tmp_path / "lake"), instance=instance, partition_key=key,
                            raise_on_error=False)
    evals = {(e.asset_key.to_user_string(), e.check_name): e
             for e in result.get_asset_check_evaluations()}
    assert len(evals) == 4 + 8  # every gate of both tables reported
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert result.success is ok
    if ok:  # 40% parse failures: a WARN on samples only, products still written
        pf = evals[("samples", "parse_failure_rate")]
        assert not pf.passed and pf.severity == dg.AssetCheckSeverity.WARN
        assert pf.metadata["rate"].value == pytest.approx(0.4)
        assert "products" in materialized
    else:
        lr = evals[("labels", "label_ranges")]
        assert not lr.passed and lr.severity == dg.AssetCheckSeverity.ERROR
        assert evals[("samples", "label_ranges")].passed
        assert "products" not in materialized
    assert Lake(str(tmp_path / "lake")).exists("feid", {"source": "toy", "batch": key}) is ok
