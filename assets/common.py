"""Small helpers shared by the asset modules: partition → lake path, standard metadata."""


import polars as pl
import pyarrow as pa
from dagster import AssetExecutionContext, MetadataValue

from resources.landing import split_partition_key
from seke.lake import Commit


#: Who answers for every asset of the platform (shown on each asset page).
OWNERS = ["team:seke-data"]


def tags(domain: str, pii: bool = False) -> dict[str, str]:
    """Asset tags: the domain (the stage a user filters by) and ``pii`` on tables that hold face
    crops or images of people."""
    return {"domain": domain, **({"pii": "face-images"} if pii else {})}


def lake_partition(context: AssetExecutionContext) -> dict[str, str]:
    """Hive partition values for the run's batch partition."""
    source, batch = split_partition_key(context.partition_key)
    return {"source": source, "batch": batch}


def table_metadata(frame: pl.DataFrame | pa.Table, path: "Commit | str", preview_cols: list[str] | None = None,
                   preview_rows: int = 5) -> dict:
    """Row count, schema and a preview (binary columns left out) for the UI; for a lake
    commit also the ``(table_uri, version)`` that consumers can pin."""
    df = pl.from_arrow(frame) if isinstance(frame, pa.Table) else frame
    assert isinstance(df, pl.DataFrame)
    cols = preview_cols or [c for c, t in df.schema.items() if t != pl.Binary]
    preview = df.select([c for c in cols if c in df.columns]).head(preview_rows)
    schema_md = "| column | type |\n|---|---|\n" + "\n".join(f"| {c} | {t} |" for c, t in df.schema.items())
    versioned = {}
    if isinstance(path, Commit):
        versioned = {"table_uri": MetadataValue.path(path.uri), "table_version": MetadataValue.int(path.version)}
        path = path.uri
    return {
        "dagster/row_count": MetadataValue.int(df.height),
        "path": MetadataValue.path(path),
        **versioned,
        "schema": MetadataValue.md(schema_md),
        "preview": MetadataValue.md(_markdown(preview)),
    }


def _markdown(df: pl.DataFrame) -> str:
    if df.is_empty():
        return "_empty_"
    def cell(v: object) -> str:
        s = str(v)
        return (s[:40] + "…") if len(s) > 41 else s
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows())
