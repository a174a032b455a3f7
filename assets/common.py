"""Small helpers shared by the asset modules: partition → lake path, standard metadata."""


import polars as pl
import pyarrow as pa
from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableSchema

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


def column_schema(schema: pa.Schema) -> TableSchema:
    """Dagster's column schema (the asset's Columns tab) from an Arrow schema, e.g. one of
    :mod:`seke.schemas`; a field's ``description`` metadata becomes the column description."""
    cols = []
    for f in schema:
        meta = f.metadata or {}
        desc = meta.get(b"description", b"").decode() or None
        cols.append(TableColumn(f.name, str(f.type), description=desc))
    return TableSchema(columns=cols)


def table_metadata(frame: pl.DataFrame | pa.Table, path: "Commit | str", preview_cols: list[str] | None = None,
                   preview_rows: int = 5) -> dict:
    """Row count, column schema and a readable preview (short ids, rounded numbers, no binary
    columns) for the UI; for a lake commit also the ``(table_uri, version)`` consumers can pin."""
    df = pl.from_arrow(frame) if isinstance(frame, pa.Table) else frame
    assert isinstance(df, pl.DataFrame)
    cols = preview_cols or [c for c, t in df.schema.items() if t != pl.Binary]
    preview = df.select([c for c in cols if c in df.columns]).head(preview_rows)
    versioned = {}
    schema = column_schema(df.to_arrow().schema)
    if isinstance(path, Commit):
        versioned = {"table_uri": MetadataValue.path(path.uri), "table_version": MetadataValue.int(path.version)}
        schema = TableSchema(columns=[*schema.columns, *(
            TableColumn(k, "string", description="partition column (from the Delta log)")
            for k in path.partition_columns if k not in df.columns)])
        path = path.uri
    return {
        "dagster/row_count": MetadataValue.int(df.height),
        "dagster/column_schema": MetadataValue.table_schema(schema),
        "path": MetadataValue.path(path),
        **versioned,
        "preview": MetadataValue.md(_markdown(preview)),
    }


def _cell(v: object) -> str:
    """A preview cell: hashes shortened to 10 characters, floats to 3 decimals, lists too."""
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(x) for x in v[:6]) + (", …" if len(v) > 6 else "") + "]"
    s = str(v)
    if len(s) >= 32 and all(c in "0123456789abcdef" for c in s[:32]):
        return s[:10] + "…"
    return (s[:40] + "…") if len(s) > 41 else s


def _markdown(df: pl.DataFrame) -> str:
    if df.is_empty():
        return "_empty_"
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join("| " + " | ".join(_cell(v) for v in row) + " |" for row in df.iter_rows())
