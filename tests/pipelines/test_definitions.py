"""The code location loads, validates and exposes the expected graph."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_validate_with_workspace_yaml(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}  # a fresh instance dir, as on a new machine
    r = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
                        "-w", "workspace.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_graph_has_every_stage_in_order():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_faces", "knowledge", "knowledge_prompts", "mc_samples", "verified_labels",
            "feid", "feab", "warehouse"} <= keys
    assert AssetKey("mc_samples") in graph.get(AssetKey("verified_labels")).parent_keys
    assert AssetKey("verified_labels") in graph.get(AssetKey("feid")).parent_keys


def test_sensor_adds_partitions_for_new_complete_batches(tmp_path):
    from dagster import DagsterInstance, build_sensor_context

    from pipelines.ops_schedules import landing_sensor
    from resources.landing import LandingZoneResource

    (tmp_path / "ckplus" / "2026-11-01").mkdir(parents=True)
    (tmp_path / "ckplus" / "2026-11-01" / "manifest.csv").write_text("image\n")
    (tmp_path / "ckplus" / "half-copied").mkdir(parents=True)  # no manifest yet: not complete
    (tmp_path / "wild" / "w1").mkdir(parents=True)
    (tmp_path / "wild" / "w1" / "manifest.csv").write_text("image\n")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", ["wild__w1"])
    with build_sensor_context(instance=instance, resources={
            "landing": LandingZoneResource(path=str(tmp_path))}) as ctx:
        result = landing_sensor(ctx)
    assert [r.partition_key for r in result.run_requests] == ["ckplus__2026-11-01"]
    assert [r.run_key for r in result.run_requests] == ["ckplus__2026-11-01"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["ckplus__2026-11-01"]


def test_every_asset_has_a_description_owner_group_and_domain_tag():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 20, name
        assert node.owners, name
        assert node.group_name in {"ingest", "knowledge", "annotation", "products", "review",
                                   "evaluation", "training"}, (name, node.group_name)
        assert node.tags.get("domain"), name
    pii = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).tags.get("pii")}
    assert {"raw_faces", "feid", "feab"} <= pii                     # tables holding face crops
    assert graph.get(__import__("dagster").AssetKey("warehouse")).partitions_def is None
    assert graph.get(__import__("dagster").AssetKey("warehouse")).automation_condition is not None


def test_groups_read_in_pipeline_order():
    """Collapsed lineage: ingest → knowledge → annotation → products → review → evaluation /
    training; no group feeds one that comes before it."""
    from pipelines.definitions import defs

    order = ["ingest", "knowledge", "annotation", "products", "review", "evaluation", "training"]
    graph = defs.resolve_asset_graph()
    backwards = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        for parent in node.parent_keys:
            up = graph.get(parent).group_name
            if order.index(up) > order.index(node.group_name) and {up, node.group_name} != {"evaluation", "training"}:
                backwards.append(f"{parent.to_user_string()} ({up}) -> {key.to_user_string()} ({node.group_name})")
    assert not backwards, backwards
