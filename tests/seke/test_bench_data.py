"""Benches say which faces they measured and refuse to measure none (issue 15, item 5)."""

import polars as pl
import pytest

from seke.bench_data import AUTO_SPLIT, NoData, data_field, resolve_split, select_split
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
    assert resolve_split(["train", None], "validation") == "validation"
    assert resolve_split([None, None], "validation") is None and resolve_split(["train"], None) is None
    with pytest.raises(NoData):
        data_field({})


def test_load_set_uses_the_asked_split(tmp_path):
    pl.DataFrame({"image": ["a.png", "b.png", "c.png"], "split": ["train", "PublicTest", "PublicTest"],
                  "expression": ["happy", "sad", "angry"]}).write_csv(tmp_path / "manifest.csv")
    assert load_set(tmp_path, None, "PublicTest")["image"].to_list() == ["b.png", "c.png"]
    assert load_set(tmp_path, None, "PublicTest")["expression"].to_list() == ["sadness", "anger"]
    with pytest.raises(NoData, match="PublicTest, train"):
        load_set(tmp_path, None, "validation")


def test_labelled_sets_is_one_set_or_every_set_in_a_folder(tmp_path):
    from seke.bench_data import labelled_sets

    for name in ("wild", "ckplus", "extra_heldout", "fer2013"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.csv").write_text("image,expression\n")
    (tmp_path / "not_a_set").mkdir()
    # a folder of sets: the preferred names first, in their order, then the rest by name
    assert [n for n, _ in labelled_sets(tmp_path, ("fer2013", "ckplus", "wild"))] == [
        "fer2013", "ckplus", "wild", "extra_heldout"]
    # one set, named after its folder
    assert labelled_sets(tmp_path / "ckplus", ("fer2013",)) == [("ckplus", tmp_path / "ckplus")]
    with pytest.raises(NoData, match="no manifest.csv"):
        labelled_sets(tmp_path / "not_a_set")
    with pytest.raises(NoData, match="no manifest.csv"):
        labelled_sets(tmp_path / "missing")


@pytest.mark.parametrize("splits, chosen", [
    (["train", "validation", "PublicTest"], "validation"),   # the dev split where a set has it
    (["train", "PrivateTest", "PublicTest"], "PrivateTest+PublicTest"),  # a held-out copy's own splits
    (["test", "test"], "test"),
    (["train", "train"], "train"),                           # only training rows: said, not hidden
    ([None, None], None),                                    # no split labels: every row
])
def test_auto_split_measures_dev_or_held_out_rows_never_train_beside_others(splits, chosen):
    assert resolve_split(splits, AUTO_SPLIT) == chosen
    rows = list(enumerate(splits))
    kept = select_split(rows, lambda r: r[1], AUTO_SPLIT, "set")
    assert [s for _, s in kept] == [s for s in splits if chosen is None or s in chosen.split("+")]
    assert all(s != "train" for _, s in kept) or chosen == "train"


def test_a_named_split_list_keeps_each_and_an_absent_one_says_so():
    rows = [("a", "train"), ("b", "PublicTest"), ("c", "PrivateTest")]
    assert select_split(rows, lambda r: r[1], "PublicTest+PrivateTest", "fer") == rows[1:]
    with pytest.raises(NoData, match="split='test'.*PrivateTest, PublicTest, train.*--split auto"):
        select_split(rows, lambda r: r[1], "test", "fer")


def test_load_set_records_the_split_auto_picked(tmp_path):
    pl.DataFrame({"image": ["a.png", "b.png", "c.png"], "split": ["train", "PublicTest", "PrivateTest"],
                  "expression": ["happy", "sad", "angry"]}).write_csv(tmp_path / "manifest.csv")
    man = load_set(tmp_path, None, AUTO_SPLIT)
    assert man["image"].to_list() == ["b.png", "c.png"]
    assert man["_split_used"].unique().to_list() == ["PrivateTest+PublicTest"]
