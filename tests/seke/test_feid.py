import polars as pl

from seke.feab import SPLIT_COLUMN, build_feab, split_benchmark
from seke.feid import TEMPLATES, TEMPLATE_VERSION, build_feid, rationale
from seke.schemas import FEID
from seke.taxonomy import AU_NAMES
from tests.seke.products_fixtures import make_faces


def test_feid_records_per_granularity_and_combined():
    raw, labels = make_faces(n_subjects=10, per_subject=3, n_loose=30)
    split = split_benchmark(labels)
    feid = build_feid(split, raw)
    assert feid.columns[: len(FEID.names)] == FEID.names
    faces = set(split.filter((pl.col(SPLIT_COLUMN) == "feid") & (pl.col("status") == "accepted"))["face_id"])
    assert set(feid["face_id"]) == faces
    per_face = feid.group_by("face_id").agg(pl.col("task").sort().alias("tasks"))
    assert all(t.to_list() == ["aus", "combined", "expression", "va"] for t in per_face["tasks"])
    assert feid["record_id"].n_unique() == feid.height
    assert set(feid["template_version"]) == {TEMPLATE_VERSION}
    # several phrasings are actually used
    for task, templates in TEMPLATES.items():
        used = feid.filter(pl.col("task") == task)["template_id"].n_unique()
        assert used >= 2 and used <= len(templates)
    # FEID never contains a benchmark face
    feab = build_feab(split, raw)
    assert not set(feid["face_id"]) & set(feab["face_id"])


def test_feid_origin_is_weakest_and_confidence_min():
    raw, labels = make_faces(n_subjects=0, n_loose=14)
    feid = build_feid(labels, raw, fraction=0.0)
    comb = feid.filter(pl.col("task") == "combined").join(
        labels.select("face_id", "va_origin", "au_origin"), on="face_id")
    for row in comb.iter_rows(named=True):
        origins = {row["va_origin"], row["au_origin"]}
        expected = "derived" if "derived" in origins else ("generated" if "generated" in origins else "verified")
        assert row["origin"] == expected
        assert row["confidence"] == 0.6  # min(1.0 human expression, 0.7 VA, 0.6 AUs)
    expr = feid.filter(pl.col("task") == "expression")
    assert set(expr["origin"]) == {"human"} and set(expr["confidence"]) == {1.0}


def test_feid_deterministic_and_cites_aus():
    raw, labels = make_faces()
    a, b = build_feid(labels, raw), build_feid(labels.reverse(), raw)
    key = ["record_id", "template_id", "response"]
    assert a.select(key).sort("record_id").equals(b.select(key).sort("record_id"))
    comb = a.filter((pl.col("task") == "combined") & (pl.col("expression") == "happiness"))
    assert comb.height > 0
    for text in comb["response"]:
        assert "AU12 (lip corner puller)" in text and "happiness" in text and "Valence" in text


def test_rationale_words():
    text = rationale("sadness", -0.6, -0.3, [1, 4, 15, 17])
    assert "AU1 (inner brow raiser), AU4 (brow lowerer), AU15 (lip corner depressor), typical of sadness" in text
    assert f"AU17 ({AU_NAMES[17]})" in text
    assert "consistent with sadness" in text
    assert "outside the usual region of happiness" in rationale("happiness", -0.8, -0.5, [])
