"""Benches say which faces they measured and refuse to measure none (issue 15, item 5)."""

import polars as pl
import pytest

from seke.bench_data import NoData, data_field, select_split, split_used
from seke.vision.quality import load_set


def test_split_is_chosen_and_a_missing_split_is_an_error():
    rows = [("a", "train"), ("b", "val"), ("c", "val")]
    assert select_split(rows, lambda r: r[1], "val", "fer") == rows[1:]
    assert select_split(rows, lambda r: r[1], None, "fer") == rows
    with pytest.raises(NoData, match="split='validation'.*train, val"):
        select_split(rows, lambda r: r[1], "validation", "fer")
    # a set without split labels (CK+, wild) is a dev set as shipped: every row
    assert select_split([("x", None)], lambda r: r[1], "validation", "ck") == [("x", None)]


def test_data_field_names_sets_counts_and_split():
    assert data_field({"fer2013": 100, "ckplus": 98}, {"fer2013": "validation", "ckplus": None}
                      ) == "fer2013[validation]:100,ckplus:98"
    assert split_used(["train", None], "validation") == "validation"
    assert split_used([None, None], "validation") is None and split_used(["train"], None) is None
    with pytest.raises(NoData):
        data_field({})


def test_load_set_uses_the_asked_split(tmp_path):
    pl.DataFrame({"image": ["a.png", "b.png", "c.png"], "split": ["train", "PublicTest", "PublicTest"],
                  "expression": ["happy", "sad", "angry"]}).write_csv(tmp_path / "manifest.csv")
    assert load_set(tmp_path, None, "PublicTest")["image"].to_list() == ["b.png", "c.png"]
    assert load_set(tmp_path, None, "PublicTest")["expression"].to_list() == ["sadness", "anger"]
    with pytest.raises(NoData, match="PublicTest, train"):
        load_set(tmp_path, None, "validation")
