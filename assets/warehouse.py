"""``warehouse``: the analysts' DuckDB file with a view per lake table."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.partitions import batches, one_batch_per_run
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource
from seke.warehouse import build_warehouse, view_counts, view_versions


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["feid", "feab", "verified_labels", "mc_samples", "raw_faces"],
       group_name="products", kinds={"duckdb"})
def warehouse(context: AssetExecutionContext, lake: LakeResource, duckdb: WarehouseResource) -> MaterializeResult:
    """DuckDB views over the current files of every lake table (partition columns from the
    Delta log), rebuilt after each batch is published. Built into a temporary file and swapped
    in atomically, so analysts holding the previous file open read-only are never broken."""
    build_warehouse(lake.lake(), duckdb.path)
    # connect_readonly attaches S3 tables as Arrow datasets (an S3 lake has no DuckDB views).
    counts = view_counts(duckdb.path)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(duckdb.path),
        "views": MetadataValue.json(counts),
        "table_versions": MetadataValue.json(view_versions(duckdb.path)),
        "query_example": MetadataValue.md(
            f"```\nduckdb -readonly {duckdb.path} \"SELECT expression, count(*) FROM verified_labels GROUP BY 1\"\n```"),
    })
