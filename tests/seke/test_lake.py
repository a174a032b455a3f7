"""The lake: Delta tables, one atomic commit per partition write, versions that can be pinned."""

import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest

from seke.lake import Lake


def test_rewrite_replaces_partition_and_partition_columns_come_from_the_log(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    part = {"source": "s", "batch": "b1"}
    c1 = lake.write_partition("t", part, pl.DataFrame({"x": [1, 2, 3]}))
    c2 = lake.write_partition("t", part, pl.DataFrame({"x": [4, 5]}))
    lake.write_partition("t", {"source": "s", "batch": "b2"}, pl.DataFrame({"x": [6]}))
    assert (c1.version, c2.version) == (1, 2) and c2.rows == 2   # v0 creates the table
    df = lake.read_table("t").sort("x")
    assert df["x"].to_list() == [4, 5, 6]
    assert set(df["batch"].to_list()) == {"b1", "b2"}
    assert (tmp_path / "lake" / "t" / "_delta_log").is_dir()
    # the partition values are not stored inside the data files
    import pyarrow.parquet as pq
    for path, values in lake.files("t"):
        assert "batch" not in pq.read_schema(path).names and values["source"] == "s"
    # the replaced version is still there to read until a vacuum
    assert lake.read_table("t", version=c1.version)["x"].sort().to_list() == [1, 2, 3]


def test_read_partition_adds_partition_columns(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_partition("t", {"source": "a", "batch": "x"}, pl.DataFrame({"v": [1.0]}))
    df = lake.read_partition("t", {"source": "a", "batch": "x"})
    assert df.columns == ["v", "source", "batch"]
    assert lake.exists("t", {"source": "a", "batch": "x"}) and not lake.exists("t", {"source": "a", "batch": "y"})


def test_partition_values_with_special_characters_round_trip(tmp_path):
    lake = Lake(str(tmp_path))
    part = {"source": "my set", "batch": "2026/11 = a%b"}
    lake.write_partition("t", part, pl.DataFrame({"v": [1, 2]}))
    assert lake.read_partition("t", part)["v"].to_list() == [1, 2]
    assert lake.partitions("t") == [part]


def test_schema_evolves_and_all_null_columns_keep_the_table_type(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_partition("t", {"source": "a", "batch": "1"}, pl.DataFrame({"x": [1.5], "tag": ["q"]}))
    # a later batch where `x` happens to be all-null and a new column appears
    lake.write_partition("t", {"source": "a", "batch": "2"},
                         pl.DataFrame({"x": [None], "tag": [None], "new": [7]}).cast({"new": pl.UInt32}))
    df = lake.read_table("t").sort("batch")
    assert df.schema["x"] == pl.Float64 and df.schema["tag"] == pl.String
    assert df["new"].to_list() == [None, 7]


def test_unpartitioned_table_is_replaced_whole(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_partition("current", {}, pl.DataFrame({"v": ["a"]}))
    lake.write_partition("current", {}, pl.DataFrame({"v": ["b"]}))
    assert lake.read_table("current")["v"].to_list() == ["b"]


def test_whole_table_overwrite_from_a_stale_empty_snapshot_conflicts_and_retries(tmp_path, monkeypatch):
    """Two writers race to replace a freshly created (empty) unpartitioned table: the one that
    read the empty version commits second. It must conflict and redo its overwrite on the new
    version, not add its rows beside the winner's (this once left two rows in knowledge_current
    after two concurrent runs)."""
    lake = Lake(str(tmp_path))
    lake.write_partition("current", {}, pl.DataFrame({"v": ["winner"]}).clear())   # created, empty
    stale = lake.delta_table("current")                                            # the loser's read
    won = lake.write_partition("current", {}, pl.DataFrame({"v": ["winner"]}))
    fresh = Lake.delta_table
    served = []

    def first_stale(self, table, version=None):
        if not served:
            served.append(table)
            return stale
        return fresh(self, table, version)

    monkeypatch.setattr(Lake, "delta_table", first_stale)
    commit = lake.write_partition("current", {}, pl.DataFrame({"v": ["loser"]}))
    monkeypatch.undo()
    assert served == ["current"] and commit.version == won.version + 1
    assert lake.read_table("current")["v"].to_list() == ["loser"]


def test_vacuum_keeps_pinned_versions_only(tmp_path):
    lake = Lake(str(tmp_path))
    part = {"source": "s", "batch": "b"}
    v0 = lake.write_partition("feid", part, pl.DataFrame({"x": [0]})).version
    v1 = lake.write_partition("feid", part, pl.DataFrame({"x": [1]})).version
    lake.write_partition("feid", part, pl.DataFrame({"x": [2]}))
    lake.pin("feid", v1, "export:/tmp/out")
    deleted = lake.vacuum("feid", retention_hours=0)
    assert len(deleted) == 1                                  # only v0's file had no reader left
    assert lake.read_table("feid", version=v1)["x"].to_list() == [1]
    assert lake.read_table("feid")["x"].to_list() == [2]
    with pytest.raises(Exception):
        lake.read_table("feid", version=v0).height            # its file is gone


def _writer(root: str, n: int, tag: int) -> None:
    lake = Lake(root)
    for i in range(n):
        lake.write_partition("t", {"source": "s", "batch": "same"},
                             pl.DataFrame({"writer": [tag] * 50, "i": [i] * 50}))


def test_concurrent_writers_of_one_partition_all_succeed(tmp_path: Path):
    """Two processes replacing the same partition: no failed write, and every version of the
    table holds exactly one writer's complete frame (never a mix, never an append)."""
    root = str(tmp_path / "lake")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, 15, tag)) for tag in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    lake = Lake(root)
    seen = set()
    for v in range(lake.version("t") + 1):                    # creation commit(s), then the writes
        frame = lake.read_table("t", version=v)
        if frame.height:
            assert frame.height == 50 and frame["writer"].n_unique() == 1 and frame["i"].n_unique() == 1
            seen.add((frame["writer"][0], frame["i"][0]))
    assert len(seen) == 30                                    # every write committed, none lost
