import duckdb
import polars as pl
import pytest

from seke.lake import Lake
from seke.warehouse import build_warehouse, connect_readonly, view_counts
from tests.seke.products_fixtures import make_faces


def _lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    for source, batch in (("ckplus", "2026-11-22"), ("fer2013", "001")):
        raw, labels = make_faces(n_subjects=2, n_loose=4, source=source, batch=batch)
        part = {"source": source, "batch": batch}
        lake.write_partition("raw_faces", part, raw)
        lake.write_partition("verified_labels", part, labels)
    return lake


def test_views_with_string_partitions_and_readonly(tmp_path):
    lake = _lake(tmp_path)
    (tmp_path / "lake" / "empty_table").mkdir()
    lake.write_partition("empty_delta", {"source": "a", "batch": "b"}, pl.DataFrame({"x": []}, schema={"x": pl.Int64}))
    db = str(tmp_path / "wh.duckdb")
    assert build_warehouse(lake, db) == ["raw_faces", "verified_labels"]
    con = connect_readonly(db)
    rows = con.execute("SELECT source, batch, count(*) FROM verified_labels GROUP BY ALL ORDER BY 1").fetchall()
    assert rows == [("ckplus", "2026-11-22", 10), ("fer2013", "001", 10)]
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE raw_faces)").fetchall())
    assert types["batch"] == "VARCHAR" and types["source"] == "VARCHAR"
    with pytest.raises(duckdb.Error):
        con.execute("CREATE TABLE x AS SELECT 1")
    con.close()
    assert view_counts(db) == {"raw_faces": 20, "verified_labels": 20}


def test_views_are_a_snapshot_until_rebuilt(tmp_path):
    """Views list the current Delta files: a new partition or a replaced one shows after the
    rebuild that follows each publish, and replaced files are never double-counted."""
    lake = _lake(tmp_path)
    db = str(tmp_path / "wh.duckdb")
    build_warehouse(lake, db)
    raw, labels = make_faces(n_subjects=1, n_loose=1, source="wild", batch="b9")
    lake.write_partition("verified_labels", {"source": "wild", "batch": "b9"}, labels)
    lake.write_partition("verified_labels", {"source": "ckplus", "batch": "2026-11-22"}, labels.head(3))
    con = connect_readonly(db)
    assert con.execute("SELECT count(*) FROM verified_labels").fetchall()[0][0] == 20   # the old snapshot
    con.close()
    build_warehouse(lake, db)
    con = connect_readonly(db)
    got = dict(con.execute("SELECT source, count(*) FROM verified_labels GROUP BY 1").fetchall())
    assert got == {"ckplus": 3, "fer2013": 10, "wild": 4}
    con.close()
    lake.write_partition("mc_samples", {"source": "wild", "batch": "b9"}, pl.DataFrame({"face_id": ["a"]}))
    assert "mc_samples" in build_warehouse(lake, db)


def test_partition_values_that_delta_escapes_in_paths(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.write_partition("t", {"source": "my set", "batch": "b=1%"}, pl.DataFrame({"x": [1]}))
    lake.write_partition("t", {"source": "plain", "batch": "b2"}, pl.DataFrame({"x": [2]}))
    db = str(tmp_path / "w.duckdb")
    build_warehouse(lake, db)
    rows = connect_readonly(db).execute("SELECT source, batch, x FROM t ORDER BY x").fetchall()
    assert rows == [("my set", "b=1%", 1), ("plain", "b2", 2)]


def test_missing_db_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="warehouse"):
        connect_readonly(str(tmp_path / "nope.duckdb"))


def test_arrow_dataset_unifies_schemas_across_partitions(tmp_path):
    """The S3 path (Arrow datasets) must see a column that only newer partitions have."""
    lake = Lake(str(tmp_path / "lake"))
    lake.write_partition("t", {"source": "a", "batch": "001"}, pl.DataFrame({"x": [1, 2]}))
    lake.write_partition("t", {"source": "b", "batch": "002"}, pl.DataFrame({"x": [3], "y": ["new"]}))
    con = duckdb.connect()
    con.register("t", lake.dataset("t"))
    rows = con.execute("SELECT source, batch, x, y FROM t ORDER BY x").fetchall()
    assert rows == [("a", "001", 1, None), ("a", "001", 2, None), ("b", "002", 3, "new")]
    local_db = str(tmp_path / "w.duckdb")
    build_warehouse(lake, local_db)
    assert connect_readonly(local_db).execute("SELECT source, batch, x, y FROM t ORDER BY x").fetchall() == rows


def test_views_record_the_table_versions_they_show(tmp_path):
    from seke.warehouse import view_versions

    lake = _lake(tmp_path)
    db = str(tmp_path / "wh.duckdb")
    build_warehouse(lake, db)
    assert view_versions(db) == {"raw_faces": lake.version("raw_faces"),
                                 "verified_labels": lake.version("verified_labels")}
