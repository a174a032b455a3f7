"""Analyst access: a DuckDB file with one view per lake table, opened in a sandbox.

Why views over an explicit file list: a Delta table's folder also holds files that earlier
versions replaced (until a vacuum removes them), so globbing the folder would double-count.
:func:`build_warehouse` lists each table's *current* files from the Delta log and writes a view
over exactly those; it runs after each publish (the ``warehouse`` asset), so the file is a
consistent snapshot that any DuckDB 2.0 client can open read-only (DuckDB 2.0 loads no
extension here, so ``delta_scan`` is not an option). Partition values come from the log:

* Local lake: ``read_parquet([...files...], hive_partitioning=true)`` when every file's
  hive path spells its partition values plainly; otherwise (values that Delta percent-encodes
  in paths) the values are joined on by file name from the log.
* S3 lake: DuckDB cannot read S3 here (no httpfs), so the file records each table's URI and
  version (``_seke_lake``) and :func:`connect_readonly` registers the Delta table at that
  version as an Arrow dataset (projection and filter pushdown), so the same SQL runs on both.

:func:`connect_readonly` opens the file so that SQL cannot write or reach outside the lake:
read-only, ``enable_external_access=false`` with only the lake allowed, configuration locked,
no extension install/load; :func:`check_read_only_sql` admits only queries (no ``COPY``,
``ATTACH``, ``INSTALL``, ``LOAD``, ``SET``…), because DuckDB allows writing *files* inside an
allowed directory even on a read-only database.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from seke.lake import Lake

META_TABLE = "_seke_lake"
#: Statement types an analyst may run: queries and their plans.
ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}


class ForbiddenSQL(ValueError):
    """SQL that would write, attach, load or configure something."""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _hive_values(path: str, keys: list[str]) -> dict[str, str]:
    segs = [s.split("=", 1) for s in path.split("/")[:-1] if "=" in s]
    return {k: v for k, v in segs if k in keys}


def _view_sql(files: list[tuple[str, dict[str, str]]], keys: list[str]) -> str:
    """``SELECT`` over the files of one table version with string partition columns."""
    file_list = "[" + ", ".join(_quote_str(f) for f, _ in files) + "]"
    plain = all(_hive_values(f, keys) == values for f, values in files)
    if not keys or plain:
        types = ", ".join(f"{_quote_str(k)}: 'VARCHAR'" for k in keys)
        hive = f", hive_partitioning=true, hive_types={{{types}}}" if keys else ", hive_partitioning=false"
        return f"SELECT * FROM read_parquet({file_list}, union_by_name=true{hive})"
    rows = ", ".join("(" + ", ".join([_quote_str(f)] + [_quote_str(v[k]) if v[k] is not None else "NULL"
                                                        for k in keys]) + ")" for f, v in files)
    cols = ", ".join(["__file"] + [_quote_ident(k) for k in keys])
    picked = ", ".join(f"p.{_quote_ident(k)}" for k in keys)
    return (f"SELECT d.* EXCLUDE (filename), {picked} FROM read_parquet({file_list}, union_by_name=true, "
            f"hive_partitioning=false, filename=true) d JOIN (VALUES {rows}) p({cols}) ON d.filename = p.__file")


def build_warehouse(lake: Lake, db_path: str) -> list[str]:
    """(Re)create the DuckDB file at ``db_path`` with a view per non-empty lake table.

    Returns the view names. Built beside the target and renamed into place, so an analyst
    holding the previous file open read-only never sees a half-built catalogue.
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
                    "s3_endpoint VARCHAR, s3_region VARCHAR, partition_keys VARCHAR[], version BIGINT, "
                    "lake_root VARCHAR)")
        _, root = lake.filesystem()
        for table in lake.tables():
            dt = lake.delta_table(table)
            version = dt.version()
            files = lake.files(table, version)
            if not files:
                continue
            keys = list(dt.metadata().partition_columns)
            if not lake.is_s3:
                con.execute(f"CREATE VIEW {_quote_ident(table)} AS {_view_sql(files, keys)}")
            con.execute(f"INSERT INTO {META_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [table, lake.uri, lake.display_path(table), lake.s3_endpoint, lake.s3_region,
                         keys, version, root])
            views.append(table)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, target)
    return views


def check_read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise :class:`ForbiddenSQL` unless every statement in ``sql`` is a query."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ForbiddenSQL(f"cannot parse the SQL: {exc}") from exc
    for st in statements:
        kind = st.type.name
        if kind not in ALLOWED_STATEMENTS:
            raise ForbiddenSQL(f"{kind} statements are not allowed: the warehouse is read-only "
                               "and only queries (SELECT, WITH, EXPLAIN, DESCRIBE, SHOW) may run")


def connect_readonly(db_path: str, sandbox: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the warehouse read-only; for an S3 lake, attach the tables as Arrow datasets at the
    versions the warehouse was built from.

    With ``sandbox`` (the default), file access is limited to the lake root (none for an S3
    lake), extensions can be neither installed nor loaded, and the configuration is locked.
    """
    if not Path(db_path).exists():
        raise FileNotFoundError(f"no warehouse at {db_path}; materialize the `warehouse` asset "
                                "or run build_warehouse() first")
    con = duckdb.connect(db_path, read_only=True, config={"autoinstall_known_extensions": False,
                                                          "autoload_known_extensions": False})
    rows = con.execute(f"SELECT table_name, uri, s3_endpoint, s3_region, version, lake_root "
                       f"FROM {META_TABLE}").fetchall()
    roots = set()
    for table, uri, endpoint, region, version, root in rows:
        if uri.startswith("s3://"):
            lake = Lake(uri, s3_endpoint=endpoint, s3_region=region)
            con.register(table, lake.dataset(table, version))
        else:
            roots.add(root.rstrip("/") + "/")
    if sandbox:
        dirs = ", ".join(_quote_str(r) for r in sorted(roots))
        con.execute(f"SET allowed_directories = [{dirs}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the lake tables queryable on ``con``."""
    return [r[0] for r in con.execute(f"SELECT table_name FROM {META_TABLE} ORDER BY 1").fetchall()]


def view_versions(db_path: str) -> dict[str, int]:
    """The Delta table version each view of the warehouse shows."""
    con = duckdb.connect(db_path, read_only=True)
    try:
        return dict(con.execute(f"SELECT table_name, version FROM {META_TABLE} ORDER BY 1").fetchall())
    finally:
        con.close()


def view_counts(db_path: str) -> dict[str, int]:
    """Row count per view, through :func:`connect_readonly` (works for local and S3 lakes)."""
    con = connect_readonly(db_path)
    try:
        return {v: int(con.execute(f"SELECT count(*) FROM {_quote_ident(v)}").fetchall()[0][0])
                for v in views(con)}
    finally:
        con.close()
