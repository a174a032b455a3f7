"""Analyst access: a DuckDB database with one view per lake table.

Why views, not copies: the lake stays the single source of truth, and a view always shows the
partitions written so far. Hive partition keys (``source``, ``batch``, …) become columns.
Partition values stay strings (DuckDB would otherwise turn ``batch=2026-11-22`` into a DATE in
one table and leave it a string in another).

* Local lake: persistent views over ``read_parquet('<root>/<table>/**/part-*.parquet',
  hive_partitioning=true)`` — any DuckDB client can open the file read-only and query them.
* S3 lake: DuckDB cannot download its ``httpfs`` extension here (DESIGN.md §7), so the file only
  records which tables exist where (``_seke_lake``); :func:`connect_readonly` registers a
  ``pyarrow.dataset`` per table on the connection (DuckDB scans Arrow datasets with projection
  and filter pushdown), so the same SQL runs against both.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from seke.lake import Lake

META_TABLE = "_seke_lake"
PART_GLOB = "part-*.parquet"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _parquet_files(lake: Lake, table: str) -> list[pafs.FileInfo]:
    fs, _ = lake.filesystem()
    base = lake.table_path(table)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
            and not i.base_name.startswith((".", "_"))]


def partition_keys(lake: Lake, table: str) -> list[str]:
    """Hive keys of a table, read from its first data file's path (``source``, ``batch``…)."""
    files = _parquet_files(lake, table)
    if not files:
        return []
    rel = files[0].path[len(lake.table_path(table)):].strip("/").split("/")[:-1]
    return [seg.split("=", 1)[0] for seg in rel if "=" in seg]


def table_dataset(lake: Lake, table: str) -> ds.Dataset:
    """A table as an Arrow dataset with string-typed hive partition columns.

    The schema is the union of every file's schema (like DuckDB's ``union_by_name``), so a
    column added in a later batch shows up, as null in older partitions.
    """
    fs, _ = lake.filesystem()
    keys = partition_keys(lake, table)
    part_schema = pa.schema([(k, pa.string()) for k in keys])
    partitioning = ds.partitioning(part_schema, flavor="hive") if keys else None
    files = [f.path for f in _parquet_files(lake, table)]
    probe = ds.dataset(files, filesystem=fs, format="parquet")
    schemas = [frag.physical_schema for frag in probe.get_fragments()]
    schema = pa.unify_schemas([*schemas, part_schema], promote_options="permissive")
    return ds.dataset(files, schema=schema, filesystem=fs, format="parquet", partitioning=partitioning,
                      partition_base_dir=lake.table_path(table))


def build_warehouse(lake: Lake, db_path: str) -> list[str]:
    """(Re)create the DuckDB file at ``db_path`` with a view per non-empty lake table.

    Returns the view names. The file is rebuilt atomically (written beside, then renamed), so an
    analyst holding it open read-only never sees a half-built catalogue.
    """
    target = Path(db_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    for p in (tmp, Path(f"{tmp}.wal")):
        p.unlink(missing_ok=True)
    views: list[str] = []
    con = duckdb.connect(str(tmp))
    try:
        con.execute(f"CREATE TABLE {META_TABLE} (table_name VARCHAR, uri VARCHAR, location VARCHAR, "
                    "s3_endpoint VARCHAR, s3_region VARCHAR, partition_keys VARCHAR[])")
        for table in lake.tables():
            if not _parquet_files(lake, table):
                continue
            keys = partition_keys(lake, table)
            location = lake.display_path(table)
            if not lake.is_s3:
                pattern = f"{lake.table_path(table)}/**/{PART_GLOB}"
                types = ", ".join(f"{_quote_str(k)}: 'VARCHAR'" for k in keys)
                hive_types = f", hive_types={{{types}}}" if keys else ""
                con.execute(
                    f"CREATE VIEW {_quote_ident(table)} AS SELECT * FROM read_parquet("
                    f"{_quote_str(pattern)}, hive_partitioning=true, union_by_name=true{hive_types})")
            con.execute(f"INSERT INTO {META_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                        [table, lake.uri, location, lake.s3_endpoint, lake.s3_region, keys])
            views.append(table)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, target)
    return views


def connect_readonly(db_path: str) -> duckdb.DuckDBPyConnection:
    """Open the warehouse read-only; for an S3 lake, attach the tables as Arrow datasets."""
    if not Path(db_path).exists():
        raise FileNotFoundError(f"no warehouse at {db_path}; materialize the `warehouse` asset "
                                "or run build_warehouse() first")
    con = duckdb.connect(db_path, read_only=True)
    rows = con.execute(f"SELECT table_name, uri, s3_endpoint, s3_region FROM {META_TABLE}").fetchall()
    for table, uri, endpoint, region in rows:
        if uri.startswith("s3://"):
            lake = Lake(uri, s3_endpoint=endpoint, s3_region=region)
            con.register(table, table_dataset(lake, table))
    return con


def views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the lake tables queryable on ``con``."""
    return [r[0] for r in con.execute(f"SELECT table_name FROM {META_TABLE} ORDER BY 1").fetchall()]



def view_counts(db_path: str) -> dict[str, int]:
    """Row count per view, through :func:`connect_readonly` (works for local and S3 lakes)."""
    con = connect_readonly(db_path)
    try:
        return {v: int(con.execute(f"SELECT count(*) FROM {_quote_ident(v)}").fetchone()[0])
                for v in views(con)}
    finally:
        con.close()
