"""FEID → training arrays (no torch needed): dedupe by face, labels, masks, per-item errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from seke.schemas import FEID, conform
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from seke.train.arrays import data_version, drop_overlap, from_feid
from tests.seke.train.synthetic import AUS, feid_rows


def test_one_row_per_face_with_all_granularities():
    table = feid_rows(6, with_va=True, with_aus=True)
    assert table.num_rows == 6 * 4  # expression, va, aus, combined records per face
    arrays, errors = from_feid(table, image_size=24)
    assert errors == []
    assert len(arrays) == 6 and len(set(arrays.face_id)) == 6
    assert arrays.images.shape == (6, 24, 24) and arrays.images.dtype == np.uint8
    assert (arrays.expression >= 0).all() and (arrays.expression_w == 1.0).all()
    assert (arrays.expression_origin == "human").all()
    # VA/AU labels come from their own records (confidence 0.8 there), not from `combined`
    assert np.allclose(arrays.va_w, 0.8) and np.allclose(arrays.aus_w, 0.8)
    for k in range(6):
        name = EXPRESSIONS[arrays.expression[k]]
        on = {AU_CATALOGUE[j] for j in np.flatnonzero(arrays.aus[k])}
        assert on == set(AUS[name])


def test_missing_granularity_has_zero_weight():
    arrays, _ = from_feid(feid_rows(4, with_va=False, with_aus=False), image_size=24)
    assert (arrays.va_w == 0).all() and (arrays.aus_w == 0).all() and (arrays.aus == 0).all()
    assert arrays.counts() == {"faces": 4, "expression": 4, "va": 0, "aus": 0, "human_expression": 4}


def test_bad_image_is_a_per_face_error_not_a_failure():
    table = feid_rows(3)
    imgs = table.column("image_png").to_pylist()
    bad_face = table.column("face_id")[0].as_py()
    imgs = [b"not a png" if f == bad_face else im for f, im in zip(table.column("face_id").to_pylist(), imgs)]
    table = table.set_column(table.schema.get_field_index("image_png"), "image_png", pa.array(imgs, pa.binary()))
    arrays, errors = from_feid(table, image_size=24)
    assert len(arrays) == 2 and [e["face_id"] for e in errors] == [bad_face]
    assert "undecodable" in errors[0]["reason"]


def test_combined_record_used_when_no_task_record():
    t = feid_rows(1).to_pylist()
    combined = [r for r in t if r["task"] == "combined"]
    arrays, _ = from_feid(conform(pa.Table.from_pylist(combined), FEID), image_size=24)
    assert arrays.expression_w[0] == pytest.approx(0.8) and arrays.va_w[0] == pytest.approx(0.8)


def test_leak_guard_and_data_version():
    a, _ = from_feid(feid_rows(5, seed=1), image_size=24)
    b = a.subset([1, 3])
    kept, removed = drop_overlap(a, b)
    assert removed == 2 and len(kept) == 3
    v1 = data_version(["source=x/batch=1"], a.face_id)
    assert v1 == data_version(["source=x/batch=1"], list(reversed(list(a.face_id))))
    assert v1 != data_version(["source=x/batch=1", "source=x/batch=2"], a.face_id)
    assert v1 != data_version(["source=x/batch=1"], a.face_id[:4])
