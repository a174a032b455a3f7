"""The landing sensor (local and S3 through dagster-aws), the nightly schedule, the backfill
policy, and a multi-partition backfill run through the daemon-less path."""

from __future__ import annotations

import duckdb
import pytest
from dagster import (AssetKey, DagsterInstance, SkipReason, build_schedule_context,
                     build_sensor_context, instance_for_test)
from dagster_aws.s3 import S3Resource

from seke.landing import fetch_batch, list_landing_batches
from pipelines.ops_schedules import (API_BACKFILL_POLICY, landing_sensor, nightly_catch_up)
from resources.landing import LandingZoneResource
from tests.ops.graph_runner import (make_landing_batch, require_full_graph, run_batch,
                                    run_knowledge)


def _s3(seaweedfs) -> S3Resource:
    return S3Resource(endpoint_url=seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key,
                      aws_secret_access_key=seaweedfs.secret_key, region_name=seaweedfs.region)


def test_landing_sensor_on_s3_adds_partitions_once(seaweedfs, s3_lake_uri, tmp_path, monkeypatch):
    client = seaweedfs.client()
    prefix = s3_lake_uri.split("/", 3)[3] + "/landing"
    landing_uri = f"s3://{seaweedfs.bucket}/{prefix}"
    for src, b in [("ckplus", "b1"), ("fer2013", "b2")]:
        client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/{src}/{b}/images/x.png", Body=b"png")
        client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/{src}/{b}/manifest.csv", Body=b"image\n")
    client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/wild/uploading/a.jpg", Body=b"x")

    with DagsterInstance.ephemeral() as instance:
        resources = {"landing": LandingZoneResource(path=landing_uri, s3=_s3(seaweedfs))}
        with build_sensor_context(instance=instance, resources=resources) as ctx:
            result = landing_sensor(ctx)
        keys = [r.partition_key for r in result.run_requests]
        assert keys == ["ckplus__b1", "fer2013__b2"]
        assert [r.run_key for r in result.run_requests] == keys
        assert result.dynamic_partitions_requests[0].partition_keys == keys
        instance.add_dynamic_partitions("batches", keys)   # what the daemon does with the result
        # Second tick: nothing new -> skip; the incomplete batch appears once its manifest lands.
        with build_sensor_context(instance=instance, resources=resources) as ctx:
            again = landing_sensor(ctx)
        assert isinstance(again, SkipReason)
        client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/wild/uploading/manifest.csv", Body=b"image\n")
        with build_sensor_context(instance=instance, resources=resources) as ctx:
            third = landing_sensor(ctx)
        assert [r.partition_key for r in third.run_requests] == ["wild__uploading"]

    # Ingestion reads local files: the batch is fetched from S3 byte-for-byte.
    local = fetch_batch(f"s3://{seaweedfs.bucket}/{prefix}", "ckplus", "b1", tmp_path / "scratch",
                        client)
    assert (local / "images" / "x.png").read_bytes() == b"png"
    assert (local / "manifest.csv").exists()


def test_landing_sensor_local(tmp_path, monkeypatch):
    monkeypatch.delenv("SEKE_LANDING_URI", raising=False)
    landing = tmp_path / "landing"
    (landing / "ckplus" / "b1").mkdir(parents=True)
    (landing / "ckplus" / "b1" / "manifest.csv").write_text("image\n")
    (landing / "ckplus" / "partial").mkdir(parents=True)
    assert list_landing_batches(str(landing)) == ["ckplus__b1"]
    with DagsterInstance.ephemeral() as instance:
        with build_sensor_context(instance=instance, resources={
                "landing": LandingZoneResource(path=str(landing))}) as ctx:
            result = landing_sensor(ctx)
        assert [r.partition_key for r in result.run_requests] == ["ckplus__b1"]


def test_backfill_policy_bounds_partitions_per_run():
    assert API_BACKFILL_POLICY.max_partitions_per_run == 1
    assert API_BACKFILL_POLICY.policy_type.value == "MULTI_RUN"


def test_multi_partition_backfill_then_nightly_catch_up(tmp_path):
    """Three batches materialized partition by partition on one instance (the run-per-partition
    backfill the policy asks for, without a daemon), then the nightly schedule finds only the
    batch that never ran."""
    require_full_graph()
    landing, lake = tmp_path / "landing", str(tmp_path / "lake")
    keys = ["ckplus__d1", "ckplus__d2", "ckplus__d3"]
    for k in keys:
        make_landing_batch(landing, *k.split("__"), n=3)
    with instance_for_test() as instance:   # a real (temporary) SQLite instance with a ref
        instance.add_dynamic_partitions("batches", keys + ["ckplus__never"])
        assert run_knowledge(instance, lake, landing).success
        backfill_id = "bf-test"
        for k in keys:
            res = run_batch(instance, lake, landing, k, tags={"dagster/backfill": backfill_id})
            assert res.success
            assert res.dagster_run.tags["dagster/backfill"] == backfill_id
        done = instance.get_materialized_partitions(AssetKey("verified_labels"))
        assert done == set(keys)
        runs = instance.get_run_records()
        assert sum(r.dagster_run.tags.get("dagster/backfill") == backfill_id for r in runs) == len(keys)

        con = duckdb.connect()
        per_batch = dict(con.execute(
            f"SELECT batch, count(*) FROM read_parquet('{lake}/verified_labels/*/*/*.parquet', "
            "hive_partitioning=true) GROUP BY batch").fetchall())
        assert set(per_batch) == {"d1", "d2", "d3"} and all(n > 0 for n in per_batch.values())

        from datetime import datetime, timezone
        reqs = nightly_catch_up(build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 23, 2, tzinfo=timezone.utc)))
        assert [r.partition_key for r in reqs] == ["ckplus__never"]
        assert reqs[0].run_key == "nightly-2026-11-23-ckplus__never"
