"""The lake writes hive partitions atomically and idempotently."""

import duckdb
import polars as pl

from seke.lake import Lake


def test_rewrite_replaces_partition_and_hive_columns_come_back(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    part = {"source": "s", "batch": "b1"}
    lake.write_partition("t", part, pl.DataFrame({"x": [1, 2, 3]}))
    lake.write_partition("t", part, pl.DataFrame({"x": [4, 5]}))
    lake.write_partition("t", {"source": "s", "batch": "b2"}, pl.DataFrame({"x": [6]}))
    files = sorted(p.name for p in (tmp_path / "lake" / "t").rglob("*") if p.is_file())
    assert files == ["part-0.parquet", "part-0.parquet"]  # no temp files, no duplicates
    df = lake.read_table("t").sort("x")
    assert df["x"].to_list() == [4, 5, 6]
    assert set(df["batch"].to_list()) == {"b1", "b2"}
    got = duckdb.sql(f"SELECT count(*), count(DISTINCT batch) FROM read_parquet('{tmp_path}/lake/t/*/*/*.parquet', hive_partitioning=true)").fetchall()[0]
    assert got == (3, 2)


def test_read_partition_adds_partition_columns(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_partition("t", {"source": "a", "batch": "x"}, pl.DataFrame({"v": [1.0]}))
    df = lake.read_partition("t", {"source": "a", "batch": "x"})
    assert df.columns == ["v", "source", "batch"]
