"""``warehouse``: the analysts' DuckDB file with a view per lake table."""

import os
import uuid

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from pipelines.partitions import batches, one_batch_per_run
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource
from seke.warehouse import build_warehouse, connect_readonly


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["feid", "feab", "verified_labels", "mc_samples", "raw_faces"],
       group_name="products", kinds={"duckdb"})
def warehouse(context: AssetExecutionContext, lake: LakeResource, duckdb: WarehouseResource) -> MaterializeResult:
    """DuckDB views over every lake table (hive partitions as columns), rebuilt after each
    batch. Built into a temporary file and swapped in atomically, so analysts holding the
    previous file open read-only are never broken."""
    os.makedirs(os.path.dirname(os.path.abspath(duckdb.path)), exist_ok=True)
    tmp = f"{duckdb.path}.{uuid.uuid4().hex}.tmp"
    views = build_warehouse(lake.lake(), tmp)
    os.replace(tmp, duckdb.path)
    # connect_readonly attaches S3 tables as Arrow datasets (an S3 lake has no DuckDB views).
    con = connect_readonly(duckdb.path)
    counts = {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchone()[0] for v in views}
    con.close()
    return MaterializeResult(metadata={
        "path": MetadataValue.path(duckdb.path),
        "views": MetadataValue.json(counts),
        "query_example": MetadataValue.md(
            f"```\nduckdb -readonly {duckdb.path} \"SELECT expression, count(*) FROM verified_labels GROUP BY 1\"\n```"),
    })
