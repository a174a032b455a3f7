"""The batch summary (demo and `seke ingest`) reads through the Lake, so a lake under a dotted
folder still counts, and it counts the batch's partition only."""

import polars as pl

from pipelines.ingest import batch_summary
from seke.lake import Lake


def test_summary_under_a_hidden_parent_folder_counts_this_batch(tmp_path):
    root = tmp_path / ".local" / "lake"
    lake = Lake(str(root))
    faces = pl.DataFrame({"face_id": ["a", "b", "c"]})
    labels = pl.DataFrame({"face_id": ["a", "b", "c"], "status": ["accepted", "accepted", "abstained"]})
    lake.write_partition("raw_faces", {"source": "s", "batch": "b1"}, faces)
    lake.write_partition("raw_faces", {"source": "s", "batch": "other"}, faces.head(1))
    lake.write_partition("verified_labels", {"source": "s", "batch": "b1"}, labels)
    lake.write_partition("quarantine", {"source": "s", "batch": "b1", "stage": "raw_faces"},
                         pl.DataFrame({"item_id": ["x.png"], "reason": ["truncated"], "detail": ["."]}))
    text = batch_summary(lake, str(tmp_path / "none.duckdb"), "s", "b1", "landing/s/b1", 1.0)
    assert "faces found: 3; files/items quarantined: 1 (truncated: 1)" in text
    assert "labels accepted: 2, abstained: 1" in text
    assert "FEID" not in text
