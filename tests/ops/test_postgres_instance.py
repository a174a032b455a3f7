"""A real materialization on a Dagster instance configured by infra/dagster.postgres.yaml.

PostgreSQL (run/event/schedule storage) is a real server on a loopback port; compute logs go to
a real S3 server (SeaweedFS), exactly as in the compose/Helm deployment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetSelection, DagsterInstance, DagsterRunStatus, RunsFilter

from tests.ops.graph_runner import make_landing_batch, run_batch, run_knowledge

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg_instance(tmp_path, monkeypatch, postgres_server, postgres_db, seaweedfs):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.postgres.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": postgres_server.host,
           "DAGSTER_PG_PORT": str(postgres_server.port), "DAGSTER_PG_USER": postgres_server.user,
           "DAGSTER_PG_PASSWORD": postgres_server.password or "", "DAGSTER_PG_DB": postgres_db,
           "DAGSTER_COMPUTE_LOG_BUCKET": seaweedfs.bucket, **seaweedfs.env()}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    instance = DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()


def test_materialization_on_postgres_instance(pg_instance, tmp_path, postgres_server, postgres_db, seaweedfs):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = pg_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2

    # The `vllm` pool: default limit from the yaml, then pinned as the docs say.
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 4
    instance.event_log_storage.set_concurrency_slots("vllm", 3)
    assert instance.event_log_storage.get_concurrency_info("vllm").slot_count == 3

    landing = tmp_path / "landing"
    make_landing_batch(landing, "ckplus", "pg1", n=4)
    lake = str(tmp_path / "lake")
    assert run_knowledge(instance, lake, landing).success
    # Ingestion and prompt building: the part of the graph that needs no annotator.
    ingest = AssetSelection.assets("raw_faces", "knowledge_prompts")
    result = run_batch(instance, lake, landing, "ckplus__pg1", selection=ingest)
    assert result.success

    # Runs and materializations are in PostgreSQL: read them back through a fresh connection.
    with psycopg2.connect(postgres_server.url(postgres_db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchall()[0][0] == 2
        cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        n_mat = cur.fetchall()[0][0]
    assert n_mat == 1 + 2
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert {r.run_id for r in runs} >= {result.run_id}
    from dagster import AssetKey
    mat = instance.get_latest_materialization_event(AssetKey("raw_faces"))
    assert mat is not None and mat.asset_materialization.partition == "ckplus__pg1"
    assert instance.get_dynamic_partitions("batches") == ["ckplus__pg1"]

    # Step compute logs were uploaded to S3 (S3ComputeLogManager from the same yaml).
    objs = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix="dagster-compute-logs/")
    assert objs.get("KeyCount", 0) > 0
