"""The demo's lake counts read through the Lake, so a lake under a dotted folder still counts."""

import polars as pl

from pipelines.demo import count
from seke.lake import Lake


def test_count_under_a_hidden_parent_folder(tmp_path):
    root = tmp_path / ".local" / "lake"
    lake = Lake(str(root))
    frame = pl.DataFrame({"face_id": ["a", "a", "b"], "status": ["accepted", "accepted", "abstained"]})
    lake.write_partition("verified_labels", {"source": "s", "batch": "b1"}, frame)
    assert count(root, "verified_labels") == 3
    assert count(root, "verified_labels", column="face_id") == 2
    assert count(root, "verified_labels", "status = 'accepted'") == 2
    assert count(root, "feid") == 0
