"""A full batch partition materialized with the lake on S3 (SeaweedFS), read back by DuckDB
through Arrow datasets, and re-run idempotently."""

from __future__ import annotations

import duckdb
from dagster import DagsterInstance

from seke.lake import Lake
from tests.ops.graph_runner import (batch_asset_keys, make_landing_batch, require_full_graph,
                                    run_batch, run_knowledge)

KEY = "ckplus__s3e2e"
TABLES = ("raw_faces", "knowledge_prompts", "mc_samples", "verified_labels", "feid", "feab")


def _snapshot(lake: Lake, seaweedfs, prefix: str) -> tuple[dict, list[str]]:
    con = duckdb.connect()
    counts = {}
    for t in TABLES:
        if not lake.exists(t):
            continue
        con.register(t, lake.dataset(t))   # DuckDB scans the S3 objects through pyarrow
        counts[t] = con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
    keys = sorted(o["Key"] for page in seaweedfs.client().get_paginator("list_objects_v2").paginate(
        Bucket=seaweedfs.bucket, Prefix=prefix) for o in page.get("Contents", []))
    return counts, keys


def test_full_partition_on_s3_is_readable_and_idempotent(s3_lake_uri, seaweedfs, tmp_path):
    require_full_graph()
    landing = tmp_path / "landing"
    make_landing_batch(landing, "ckplus", "s3e2e", n=4)
    lake = Lake(s3_lake_uri, s3_endpoint=seaweedfs.endpoint)
    prefix = s3_lake_uri.split("/", 3)[3] + "/"
    with DagsterInstance.ephemeral() as instance:
        assert run_knowledge(instance, s3_lake_uri, landing).success
        first = run_batch(instance, s3_lake_uri, landing, KEY)
        assert first.success
        mats = {e.asset_key.to_user_string() for e in first.get_asset_materialization_events()}
        assert mats == set(batch_asset_keys())
        counts1, keys1 = _snapshot(lake, seaweedfs, prefix)
        # Every batch table is a Delta table in the bucket, its partition under the hive layout.
        versions1 = {t: lake.version(t) for t in TABLES}
        for t in ("raw_faces", "mc_samples", "verified_labels", "feid", "feab"):
            assert f"{prefix}{t}/_delta_log/00000000000000000000.json" in keys1, t
            if counts1.get(t):   # FEAB of a few sample photos may hold no face: then no data file
                assert any(k.startswith(f"{prefix}{t}/source=ckplus/batch=s3e2e/") for k in keys1), t
        # 4 CK+ crops, or the sample photos (one group photo has 6 faces) when ../shared is absent
        assert counts1["verified_labels"] == counts1["raw_faces"] >= 4
        assert counts1["mc_samples"] >= 4

        con = duckdb.connect()
        con.register("labels", lake.dataset("verified_labels"))
        dup = con.execute("SELECT count(*) - count(DISTINCT face_id) FROM labels").fetchall()[0][0]
        assert dup == 0
        by_status = dict(con.execute("SELECT status, count(*) FROM labels GROUP BY 1").fetchall())
        assert sum(by_status.values()) == counts1["raw_faces"] and set(by_status) <= {"accepted", "abstained"}

        second = run_batch(instance, s3_lake_uri, landing, KEY)
        assert second.success
        counts2, keys2 = _snapshot(lake, seaweedfs, prefix)
    assert counts2 == counts1           # re-run replaces, never appends
    for t in TABLES:                    # one new commit per table, each with one live file
        assert lake.version(t) == versions1[t] + 1, t
        assert len(lake.files(t)) == (1 if counts1.get(t) else 0), t
    assert not [k for k in keys2 if "/_audit/" in k]   # nothing was blocked
