"""The lake: Delta Lake tables (delta-rs) on a local directory or S3, one atomic commit per write.

One table is a Delta table at ``<root>/<table>``, partitioned by the keys its writers use
(``source``/``batch`` for the per-batch tables, ``version`` for knowledge tables, none for the
``*_current`` pointers). Why Delta rather than plain Parquet files:

* **Atomic replace.** :meth:`Lake.write_partition` is ``mode="overwrite"`` with a predicate on
  the partition: one commit removes the old files and adds the new ones, so a reader sees the
  old partition or the new one, never a mix, and re-materializing never appends twice.
* **Concurrent writers are safe** locally and on S3 (delta-rs 1.x commits with a conditional
  put, ``If-None-Match: *``, which SeaweedFS and AWS honour): of two writers of one partition,
  one gets ``CommitFailedError`` and retries on the new version, so both succeed and the table
  ends with one consistent version.
* **Versions.** Every write returns a :class:`Commit` ``(table, uri, version)``; readers can
  pin a version (``read_table(..., version=N)``), and :meth:`Lake.vacuum` never deletes files
  that a pinned version (an export, a checkpoint, an evaluation) still needs.

Partition values live in the Delta log and in the paths, not inside the Parquet files; every
reader here adds them back as string columns from the log.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

#: Lake table that records which table versions consumers depend on (see :meth:`Lake.pin`).
PINS_TABLE = "version_pins"
#: Where blocked (audit-failed) frames are kept for inspection; never read as data.
AUDIT_DIR = "_audit"
WRITE_RETRIES = 8
CHECKPOINT_INTERVAL = 10


@dataclass(frozen=True)
class Commit:
    """One published table version: what a materialization records and a consumer can pin."""

    table: str
    uri: str
    version: int
    rows: int
    partition_columns: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.uri}@v{self.version}"


def _sql_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def partition_predicate(partition: Mapping[str, str]) -> str:
    """Delta SQL predicate selecting one partition (``source = 'a' AND batch = 'b'``)."""
    return " AND ".join(f"{k} = {_sql_literal(v)}" for k, v in partition.items())


def _delta_type(t: pa.DataType) -> pa.DataType:
    """The Delta-storable type for ``t`` (no unsigned ints, no views, no dictionaries, µs time)."""
    if pa.types.is_dictionary(t):
        return _delta_type(t.value_type)
    if pa.types.is_unsigned_integer(t):
        return pa.int64()
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_timestamp(t) and t.unit == "ns":
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_delta_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _delta_type(f.type)) for f in t])
    return t


def conform_for_delta(table: pa.Table, existing: pa.Schema | None) -> pa.Table:
    """Cast ``table`` so Delta can store it and it evolves ``existing`` without conflicts.

    A column the table already has takes the table's type (a batch where a column happens to be
    all-null must not change its type); an all-null column the table does not know yet becomes
    a string column; everything else gets its Delta-storable type.
    """
    fields = []
    for column in table.schema:
        if existing is not None and column.name in existing.names:
            target = existing.field(column.name).type
        elif pa.types.is_null(column.type):
            target = pa.string()
        else:
            target = _delta_type(column.type)
        fields.append(pa.field(column.name, target))
    schema = pa.schema(fields)
    if schema == table.schema:
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"frame does not fit the table's schema: {exc}") from exc


@dataclass(frozen=True)
class Lake:
    """A lake rooted at a local directory or an ``s3://`` URI.

    S3 credentials may be given; when they are not, pyarrow and delta-rs use the standard AWS
    credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
    """

    uri: str
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def _region(self) -> str:
        return self.s3_region or "us-east-1"

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the lake root on it (for files that are not tables:
        checkpoints, the audit area)."""
        if self.is_s3:
            bucket_prefix = self.uri[len("s3://"):].rstrip("/")
            endpoint = self.s3_endpoint
            fs = pafs.S3FileSystem(
                endpoint_override=endpoint, region=self._region(),
                access_key=self.s3_access_key_id, secret_key=self.s3_secret_access_key,
                scheme="http" if (endpoint or "").startswith("http://") else "https",
            )
            return fs, bucket_prefix
        return pafs.LocalFileSystem(), os.path.abspath(self.uri)

    def storage_options(self) -> dict[str, str] | None:
        """delta-rs object-store options (credentials, when not given, from the AWS chain)."""
        if not self.is_s3:
            return None
        opts = {"AWS_REGION": self._region()}
        if self.s3_endpoint:
            opts["AWS_ENDPOINT_URL"] = self.s3_endpoint
            if self.s3_endpoint.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        if self.s3_access_key_id and self.s3_secret_access_key:
            opts["AWS_ACCESS_KEY_ID"] = self.s3_access_key_id
            opts["AWS_SECRET_ACCESS_KEY"] = self.s3_secret_access_key
        return opts

    def table_path(self, table: str) -> str:
        """The table's location on :meth:`filesystem` (no scheme)."""
        _, root = self.filesystem()
        return f"{root}/{table}"

    def table_uri(self, table: str) -> str:
        """The table's URI as delta-rs and a user take it (``s3://…`` or an absolute path)."""
        return f"s3://{self.table_path(table)}" if self.is_s3 else self.table_path(table)

    def display_path(self, table: str, partition: Mapping[str, str] | None = None) -> str:
        """Where a table (or one partition of it) lives, as a user would type it."""
        parts = "/".join(f"{k}={v}" for k, v in (partition or {}).items())
        return f"{self.table_uri(table)}/{parts}" if parts else self.table_uri(table)

    # ---- tables ----------------------------------------------------------------------------
    def delta_table(self, table: str, version: int | None = None) -> DeltaTable:
        """The Delta table (at ``version``, else the latest); ``TableNotFoundError`` if none."""
        return DeltaTable(self.table_uri(table), version=version, storage_options=self.storage_options())

    def exists(self, table: str, partition: Mapping[str, str] | None = None) -> bool:
        """Whether ``table`` exists (and, with ``partition``, holds at least one row there)."""
        if not DeltaTable.is_deltatable(self.table_uri(table), storage_options=self.storage_options()):
            return False
        if not partition:
            return True
        return bool(self.partitions(table, where=partition))

    def version(self, table: str) -> int | None:
        """The table's latest version, ``None`` when the table does not exist."""
        try:
            return self.delta_table(table).version()
        except TableNotFoundError:
            return None

    def partition_columns(self, table: str) -> list[str]:
        return list(self.delta_table(table).metadata().partition_columns)

    def partitions(self, table: str, where: Mapping[str, str] | None = None,
                   version: int | None = None) -> list[dict[str, str]]:
        """Partition values that hold data (from the log), optionally filtered by ``where``."""
        dt = self.delta_table(table, version)
        keys = list(dt.metadata().partition_columns)
        files = pa.table(dt.get_add_actions(flatten=True))
        seen: dict[tuple, dict[str, str]] = {}
        cols = [files.column(f"partition.{k}").to_pylist() for k in keys] if files.num_rows else []
        for values in zip(*cols):
            row = {k: (None if v is None else str(v)) for k, v in zip(keys, values)}
            if where and any(row.get(k) != str(v) for k, v in where.items()):
                continue
            seen[tuple(values)] = row
        return list(seen.values())

    def partition_names(self, table: str, version: int | None = None) -> list[str]:
        """Sorted hive-style names (``source=a/batch=b``) of the partitions holding data."""
        return sorted("/".join(f"{k}={v}" for k, v in p.items())
                      for p in self.partitions(table, version=version))

    def files(self, table: str, version: int | None = None) -> list[tuple[str, dict[str, str]]]:
        """Every data file of a table version with its partition values (from the log)."""
        dt = self.delta_table(table, version)
        keys = list(dt.metadata().partition_columns)
        actions = pa.table(dt.get_add_actions(flatten=True))
        if not actions.num_rows:
            return []
        base = self.table_uri(table)
        paths = actions.column("path").to_pylist()
        values = [actions.column(f"partition.{k}").to_pylist() for k in keys]
        out = []
        for i, rel in enumerate(paths):
            uri = rel if "://" in rel or rel.startswith("/") else f"{base}/{_unquote(rel)}"
            out.append((uri, {k: (None if v[i] is None else str(v[i])) for k, v in zip(keys, values)}))
        return out

    def tables(self) -> list[str]:
        """Names of the Delta tables in the lake (folders holding a ``_delta_log``)."""
        fs, root = self.filesystem()
        if fs.get_file_info(root).type != pafs.FileType.Directory:
            return []
        names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(root))
                 if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))]
        return sorted(n for n in names
                      if fs.get_file_info(f"{root}/{n}/_delta_log").type == pafs.FileType.Directory)

    # ---- write -------------------------------------------------------------------------------
    def write_partition(self, table: str, partition: Mapping[str, str],
                        frame: pl.DataFrame | pa.Table) -> Commit:
        """Replace one partition of ``table`` with ``frame`` in one atomic commit.

        An empty ``partition`` replaces the whole (unpartitioned) table. Partition columns in
        ``frame`` are replaced by the partition's values. Retries a commit that lost a race
        with another writer, so concurrent writers of one partition all succeed.
        """
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        arrow = arrow.drop_columns([c for c in partition if c in arrow.column_names])
        for k, v in partition.items():
            arrow = arrow.append_column(pa.field(k, pa.string()), pa.array([str(v)] * arrow.num_rows, pa.string()))
        # A whole-table overwrite still names what it replaces ("true": every row). Without a
        # predicate, Delta's conflict check sees a writer that read an *empty* table as having
        # read nothing, so two writers racing on a fresh table both commit and both frames stay
        # (reproduced in tests/seke/test_lake.py); with one, the loser conflicts and retries.
        predicate = partition_predicate(partition) if partition else "true"
        commit = self._commit(table, arrow, mode="overwrite", partition_by=list(partition) or None,
                              predicate=predicate)
        return Commit(commit.table, commit.uri, commit.version, commit.rows, tuple(partition))

    def append(self, table: str, frame: pl.DataFrame | pa.Table,
               partition_by: list[str] | None = None) -> Commit:
        """Append rows in one commit (for append-only logs such as :data:`PINS_TABLE`)."""
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        return self._commit(table, arrow, mode="append", partition_by=partition_by, predicate=None)

    def _commit(self, table: str, arrow: pa.Table, *, mode: str, partition_by: list[str] | None,
                predicate: str | None) -> Commit:
        try:
            dt = self.delta_table(table)
        except TableNotFoundError:
            self._create(table, conform_for_delta(arrow, None).schema, partition_by)
            dt = self.delta_table(table)
        for attempt in range(WRITE_RETRIES):
            data = conform_for_delta(arrow, pa.schema(dt.schema().to_arrow()))
            try:
                # Writing through the loaded table leaves it at the version this commit got.
                write_deltalake(dt, data, mode=mode, partition_by=partition_by, predicate=predicate,
                                schema_mode="merge", storage_options=self.storage_options())
                break
            except (CommitFailedError, DeltaError) as exc:
                if not _is_conflict(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(min(2.0, 0.02 * 2 ** attempt) * (0.5 + random.random()))
                dt.update_incremental()
        return Commit(table, self.table_uri(table), dt.version(), arrow.num_rows)

    def _create(self, table: str, schema: pa.Schema, partition_by: list[str] | None) -> None:
        """Create an empty table first, in its own commit. Why: a writer whose first commit
        *creates* the table has read nothing, so when two writers race to create it the loser
        is rebased as a plain append and both frames end up in one partition; an overwrite of
        an existing table conflicts properly instead and is retried. Checkpoints every
        :data:`CHECKPOINT_INTERVAL` commits keep loading a busy table cheap."""
        try:
            DeltaTable.create(self.table_uri(table), schema=schema, mode="ignore", partition_by=partition_by,
                              configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)},
                              storage_options=self.storage_options())
        except DeltaError as exc:
            if not _is_conflict(exc):   # someone else created it first: fine
                raise

    def delete_partition(self, table: str, partition: Mapping[str, str]) -> None:
        if self.exists(table):
            self.delta_table(table).delete(partition_predicate(partition))

    # ---- read --------------------------------------------------------------------------------
    def dataset(self, table: str, version: int | None = None) -> ds.Dataset:
        """A table version as an Arrow dataset, partition columns included (DuckDB scans it
        with projection and filter pushdown)."""
        return self.delta_table(table, version).to_pyarrow_dataset()

    def read_partition(self, table: str, partition: Mapping[str, str],
                       version: int | None = None) -> pl.DataFrame:
        """One partition, its partition columns last (empty frame with the table's columns if
        the partition holds nothing)."""
        dataset = self.dataset(table, version)
        expr = None
        for k, v in partition.items():
            term = pc.field(k) == str(v)
            expr = term if expr is None else expr & term
        frame = pl.from_arrow(dataset.to_table(filter=expr))
        assert isinstance(frame, pl.DataFrame)
        keys = [k for k in partition if k in frame.columns]
        return frame.select([c for c in frame.columns if c not in keys] + keys)

    def read_table(self, table: str, version: int | None = None) -> pl.DataFrame:
        """The whole table (empty frame when the table does not exist)."""
        if version is None and not self.exists(table):
            return pl.DataFrame()
        frame = pl.from_arrow(self.dataset(table, version).to_table())
        assert isinstance(frame, pl.DataFrame)
        return frame

    # ---- versions ----------------------------------------------------------------------------
    def pin(self, table: str, version: int, pinned_by: str) -> None:
        """Record that ``pinned_by`` (an export, a checkpoint, an evaluation) depends on
        ``table`` at ``version``: :meth:`vacuum` will keep that version's files."""
        self.append(PINS_TABLE, pa.table({
            "table_name": [table], "version": pa.array([int(version)], pa.int64()),
            "pinned_by": [pinned_by], "pinned_at": pa.array([time.time()], pa.float64())}))

    def pinned_versions(self, table: str) -> list[int]:
        if not self.exists(PINS_TABLE):
            return []
        pins = self.read_table(PINS_TABLE)
        return sorted(set(pins.filter(pl.col("table_name") == table)["version"].to_list()))

    def vacuum(self, table: str, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete files no longer needed by versions within the retention window, keeping every
        pinned version; returns the files deleted (or that would be, with ``dry_run``)."""
        dt = self.delta_table(table)
        return dt.vacuum(retention_hours=retention_hours, dry_run=dry_run,
                         enforce_retention_duration=False, keep_versions=self.pinned_versions(table))

    def compact(self, table: str) -> dict:
        """Merge a table's small files into larger ones in one commit (readers unaffected)."""
        return self.delta_table(table).optimize.compact()

    # ---- audit area --------------------------------------------------------------------------
    def write_audit(self, table: str, partition: Mapping[str, str], frame: pl.DataFrame,
                    name: str) -> str:
        """Keep a frame that failed its blocking checks under ``_audit/<table>/<partition>/``
        (plain Parquet, never a table readers see); returns where it went."""
        fs, root = self.filesystem()
        parts = "/".join(f"{k}={v}" for k, v in partition.items())
        folder = f"{root}/{AUDIT_DIR}/{table}/{parts}".rstrip("/")
        fs.create_dir(folder, recursive=True)
        path = f"{folder}/{name}.parquet"
        pq.write_table(frame.to_arrow(), path, filesystem=fs, compression="zstd")
        return f"s3://{path}" if self.is_s3 else path


def _unquote(rel: str) -> str:
    """Delta log paths are percent-encoded once more than the object keys / file names."""
    return unquote(rel)


def _is_conflict(exc: Exception) -> bool:
    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "conflict", "concurrent", "version mismatch"))
