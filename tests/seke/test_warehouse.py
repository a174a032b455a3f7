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


def test_views_follow_new_partitions_and_rebuild(tmp_path):
    lake = _lake(tmp_path)
    db = str(tmp_path / "wh.duckdb")
    build_warehouse(lake, db)
    raw, labels = make_faces(n_subjects=1, n_loose=1, source="wild", batch="b9")
    lake.write_partition("verified_labels", {"source": "wild", "batch": "b9"}, labels)
    con = connect_readonly(db)
    assert con.execute("SELECT count(*) FROM verified_labels WHERE source='wild'").fetchone()[0] == 4
    con.close()
    lake.write_partition("mc_samples", {"source": "wild", "batch": "b9"}, pl.DataFrame({"face_id": ["a"]}))
    assert "mc_samples" in build_warehouse(lake, db)


def test_missing_db_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="warehouse"):
        connect_readonly(str(tmp_path / "nope.duckdb"))


def test_arrow_dataset_unifies_schemas_across_partitions(tmp_path):
    """The S3 path (Arrow datasets) must see a column that only newer partitions have."""
    from seke.warehouse import table_dataset

    lake = Lake(str(tmp_path / "lake"))
    lake.write_partition("t", {"source": "a", "batch": "001"}, pl.DataFrame({"x": [1, 2]}))
    lake.write_partition("t", {"source": "b", "batch": "002"}, pl.DataFrame({"x": [3], "y": ["new"]}))
    con = duckdb.connect()
    con.register("t", table_dataset(lake, "t"))
    rows = con.execute("SELECT source, batch, x, y FROM t ORDER BY x").fetchall()
    assert rows == [("a", "001", 1, None), ("a", "001", 2, None), ("b", "002", 3, "new")]
    local_db = str(tmp_path / "w.duckdb")
    build_warehouse(lake, local_db)
    assert connect_readonly(local_db).execute("SELECT source, batch, x, y FROM t ORDER BY x").fetchall() == rows
