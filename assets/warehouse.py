"""``warehouse``: the analysts' DuckDB file with a view per lake table."""

from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset

from assets.common import OWNERS, tags
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource
from seke.warehouse import build_warehouse, view_counts, view_versions


@asset(deps=["feid", "feab", "verified_labels", "mc_samples", "raw_faces", "knowledge_prompts", "knowledge"],
       group_name="products", kinds={"duckdb"}, owners=OWNERS, tags=tags("products"),
       automation_condition=AutomationCondition.eager())
def warehouse(context: AssetExecutionContext, lake: LakeResource, duckdb: WarehouseResource) -> MaterializeResult:
    """DuckDB views over the current files of every lake table (partition columns from the
    Delta log), one file for the whole lake, rebuilt whenever an upstream table is published
    (automation: eager; `seke ingest` and the demo run `refresh_warehouse` themselves). Built into a temporary file and swapped
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
