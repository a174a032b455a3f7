"""The Parquet lake: hive-partitioned tables on a local directory or S3, written atomically.

One table is a folder; each partition is ``<table>/source=<s>/batch=<b>/part-0.parquet``
(hive style, so DuckDB/polars/pyarrow read partitions back as columns). Writes go through
``pyarrow.fs`` so the same code serves a local path and ``s3://bucket/prefix``:

* local: write to a temporary file in the partition folder, then ``os.replace`` (atomic);
* S3: a single PUT of the complete object is atomic by itself.

Re-writing a partition replaces it (stale part files are removed after the new one is in
place), so re-materializing never appends duplicates.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Mapping

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PART_NAME = "part-0.parquet"


def _escape(value: str) -> str:
    """Hive partition values may not contain '/' or '='."""
    return str(value).replace("/", "_").replace("=", "_")


@dataclass(frozen=True)
class Lake:
    """A lake rooted at a local directory or an ``s3://`` URI."""

    uri: str
    s3_endpoint: str | None = None
    s3_region: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        if self.is_s3:
            bucket_prefix = self.uri[len("s3://"):].rstrip("/")
            fs = pafs.S3FileSystem(
                endpoint_override=self.s3_endpoint or os.environ.get("SEKE_S3_ENDPOINT") or None,
                region=self.s3_region or os.environ.get("AWS_REGION", "us-east-1"),
                access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                scheme="http" if (self.s3_endpoint or os.environ.get("SEKE_S3_ENDPOINT", "")).startswith("http://") else "https",
            )
            return fs, bucket_prefix
        root = os.path.abspath(self.uri)
        return pafs.LocalFileSystem(), root

    def table_path(self, table: str) -> str:
        _, root = self.filesystem()
        return f"{root}/{table}"

    def partition_path(self, table: str, partition: Mapping[str, str]) -> str:
        parts = "/".join(f"{k}={_escape(v)}" for k, v in partition.items())
        return f"{self.table_path(table)}/{parts}" if parts else self.table_path(table)

    def display_path(self, table: str, partition: Mapping[str, str] | None = None) -> str:
        """Path as a user would type it (s3://… or a local path)."""
        p = self.partition_path(table, partition or {})
        return f"s3://{p}" if self.is_s3 else p

    # ---- write ---------------------------------------------------------------------------
    def write_partition(self, table: str, partition: Mapping[str, str],
                        frame: pl.DataFrame | pa.Table) -> str:
        """Atomically replace one partition with ``frame``; returns the written file path."""
        fs, _ = self.filesystem()
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        # Partition columns live in the path; keeping them in the file too breaks hive reads.
        arrow = arrow.drop_columns([c for c in partition if c in arrow.column_names])
        folder = self.partition_path(table, partition)
        final = f"{folder}/{PART_NAME}"
        fs.create_dir(folder, recursive=True)
        if self.is_s3:
            pq.write_table(arrow, final, filesystem=fs, compression="zstd")
        else:
            tmp = f"{folder}/.tmp-{uuid.uuid4().hex}.parquet"
            pq.write_table(arrow, tmp, filesystem=fs, compression="zstd")
            os.replace(tmp, final)
        for info in fs.get_file_info(pafs.FileSelector(folder)):
            if info.type == pafs.FileType.File and info.path != final and info.base_name.endswith(".parquet"):
                fs.delete_file(info.path)
        return final

    def delete_partition(self, table: str, partition: Mapping[str, str]) -> None:
        fs, _ = self.filesystem()
        folder = self.partition_path(table, partition)
        if fs.get_file_info(folder).type == pafs.FileType.Directory:
            fs.delete_dir(folder)

    # ---- read ----------------------------------------------------------------------------
    def exists(self, table: str, partition: Mapping[str, str] | None = None) -> bool:
        fs, _ = self.filesystem()
        path = self.partition_path(table, partition or {})
        if partition:
            path = f"{path}/{PART_NAME}"
            return fs.get_file_info(path).type == pafs.FileType.File
        return fs.get_file_info(path).type == pafs.FileType.Directory

    def read_partition(self, table: str, partition: Mapping[str, str]) -> pl.DataFrame:
        """One partition with its partition columns added back."""
        fs, _ = self.filesystem()
        path = f"{self.partition_path(table, partition)}/{PART_NAME}"
        frame = pl.from_arrow(pq.read_table(path, filesystem=fs))
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns([pl.lit(str(v)).alias(k) for k, v in partition.items()])

    def dataset(self, table: str) -> ds.Dataset:
        """The whole table as a hive-partitioned Arrow dataset (DuckDB scans it directly)."""
        fs, _ = self.filesystem()
        return ds.dataset(self.table_path(table), filesystem=fs, format="parquet",
                          partitioning="hive", exclude_invalid_files=True,
                          ignore_prefixes=[".", "_"])

    def read_table(self, table: str) -> pl.DataFrame:
        if not self.exists(table):
            return pl.DataFrame()
        frame = pl.from_arrow(self.dataset(table).to_table())
        assert isinstance(frame, pl.DataFrame)
        return frame

    def tables(self) -> list[str]:
        fs, root = self.filesystem()
        if fs.get_file_info(root).type != pafs.FileType.Directory:
            return []
        return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root))
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))
