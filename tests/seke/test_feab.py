import polars as pl
import pytest

from seke.feab import SPLIT_COLUMN, build_feab, split_benchmark
from seke.schemas import FEAB
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from tests.seke.products_fixtures import make_faces


def test_split_is_subject_disjoint_and_near_fraction():
    _, labels = make_faces(n_subjects=400, per_subject=3, n_loose=80)
    out = split_benchmark(labels, fraction=0.25, seed=3)
    assert set(out[SPLIT_COLUMN].unique()) == {"feid", "feab"}
    subj = out.filter(pl.col("subject_id").is_not_null())
    sides = subj.group_by("subject_id").agg(pl.col(SPLIT_COLUMN).n_unique().alias("n"))
    assert sides["n"].max() == 1, "a subject landed on both sides"
    # loose faces: exactly round(fraction * n) per expression stratum
    loose = out.filter(pl.col("subject_id").is_null())
    for e, grp in loose.group_by("expression"):
        assert (grp[SPLIT_COLUMN] == "feab").sum() == round(0.25 * grp.height)


def test_subject_split_hits_fraction_per_expression_on_average():
    """Subject sides are independent coin flips: per seed the FEAB share is binomial (sd ≈ 0.022
    for 400 subjects); over 20 seeds the mean share per expression must sit at the fraction."""
    _, labels = make_faces(n_subjects=400, per_subject=3, n_loose=0)
    shares = []
    for seed in range(20):
        out = split_benchmark(labels, fraction=0.25, seed=seed)
        shares.append(out.group_by("expression").agg((pl.col(SPLIT_COLUMN) == "feab").mean().alias("s")))
    per_expr = pl.concat(shares).group_by("expression").agg(pl.col("s").mean())
    assert per_expr["s"].min() >= 0.22 and per_expr["s"].max() <= 0.28, per_expr
    overall = [float(s["s"].mean()) for s in shares]
    assert abs(sum(overall) / len(overall) - 0.25) < 0.02


def test_split_is_deterministic_and_order_independent():
    _, labels = make_faces()
    a = split_benchmark(labels, seed=1)
    b = split_benchmark(labels.reverse(), seed=1).reverse()
    assert a[SPLIT_COLUMN].to_list() == b[SPLIT_COLUMN].to_list()
    c = split_benchmark(labels, seed=2)
    assert a[SPLIT_COLUMN].to_list() != c[SPLIT_COLUMN].to_list()


def test_subject_side_is_the_same_when_batches_are_split_separately():
    _, labels = make_faces(n_subjects=60, per_subject=4, n_loose=0)
    whole = split_benchmark(labels, seed=5)
    # every subject has faces in both halves (rows alternate)
    halves = [labels.gather(list(range(k, labels.height, 2))) for k in (0, 1)]
    parts = pl.concat([split_benchmark(h, seed=5) for h in halves])
    merged = whole.join(parts.select("face_id", pl.col(SPLIT_COLUMN).alias("b")), on="face_id")
    assert merged.height == labels.height
    assert (merged[SPLIT_COLUMN] == merged["b"]).all()
    assert parts.group_by("subject_id").agg(pl.col(SPLIT_COLUMN).n_unique())[SPLIT_COLUMN].max() == 1


def test_split_rejects_bad_fraction():
    _, labels = make_faces(n_subjects=1, n_loose=1)
    with pytest.raises(ValueError):
        split_benchmark(labels, fraction=1.5)


def test_feab_items_gold_and_flags():
    raw, labels = make_faces(n_subjects=20, per_subject=3, n_loose=60)
    split = split_benchmark(labels, fraction=0.3)
    items = build_feab(split, raw)
    assert items.columns[: len(FEAB.names)] == FEAB.names
    assert {"source", "batch"} <= set(items.columns)
    bench = set(split.filter((pl.col(SPLIT_COLUMN) == "feab") & (pl.col("status") == "accepted"))["face_id"])
    abstained = set(labels.filter(pl.col("status") == "abstained")["face_id"])
    assert set(items["face_id"]) == bench
    assert not (set(items["face_id"]) & abstained)
    expr = items.filter(pl.col("task") == "expression")
    assert expr["gold_origin"].unique().to_list() == ["human"]
    assert expr["options"][0].to_list() == list(EXPRESSIONS)
    aus = items.filter(pl.col("task") == "aus")
    # human AUs for subject faces; otherwise only self-verified generated AUs, flagged
    assert set(aus.filter(pl.col("subject_id").is_not_null())["gold_origin"]) == {"human"}
    loose = aus.filter(pl.col("subject_id").is_null())
    assert loose.height > 0 and set(loose["gold_origin"]) == {"verified"}
    assert loose["gold_flagged"].all()
    assert aus["options"][0].to_list() == [f"AU{a}" for a in AU_CATALOGUE]
    va = items.filter(pl.col("task") == "va")
    assert va.height > 0 and set(va["gold_origin"]) == {"verified"} and va["gold_flagged"].all()
    lab = labels.filter(pl.col("va_origin") == "derived")["face_id"]
    assert not set(va["face_id"]) & set(lab), "derived VA must not become gold"
    assert items["item_id"].n_unique() == items.height
    assert items["image_png"].null_count() == 0


def test_feab_prefers_human_label_hidden_by_audit():
    raw, labels = make_faces(n_subjects=0, n_loose=10)
    labels = labels.with_columns(pl.lit("verified").alias("expression_origin"),
                                 pl.lit("anger").alias("expression"))
    items = build_feab(labels, raw, fraction=1.0).filter(pl.col("task") == "expression")
    acc = labels.filter(pl.col("status") == "accepted").join(raw.select("face_id", "known_expression"), on="face_id")
    merged = items.join(acc, on="face_id")
    assert (merged["gold_expression"] == merged["known_expression"]).all()
    assert not merged["gold_flagged"].any()


def test_greedy_subject_mode_stratifies_tightly_and_stays_disjoint():
    _, labels = make_faces(n_subjects=90, per_subject=4, n_loose=0)
    out = split_benchmark(labels, fraction=0.2, seed=0, subjects="greedy")
    assert out.group_by("subject_id").agg(pl.col(SPLIT_COLUMN).n_unique())[SPLIT_COLUMN].max() == 1
    shares = out.group_by("expression").agg((pl.col(SPLIT_COLUMN) == "feab").mean().alias("s"))["s"]
    hashed = split_benchmark(labels, fraction=0.2, seed=0).group_by("expression").agg(
        (pl.col(SPLIT_COLUMN) == "feab").mean().alias("s"))["s"]
    spread = lambda s: float((s - 0.2).abs().max())  # noqa: E731
    assert spread(shares) <= 0.05 and spread(shares) <= spread(hashed)
    with pytest.raises(ValueError, match="subjects"):
        split_benchmark(labels, subjects="random")
