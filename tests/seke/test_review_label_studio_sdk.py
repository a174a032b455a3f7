"""Cross-check against Label Studio's own validator (label-studio-sdk's LabelInterface).

label-studio-sdk 2.1.2 pins numpy < 2.3 via opencv, so it cannot live in the project venv;
install it aside (``pip install --target DIR label-studio-sdk==2.1.2``) and point
``SEKE_LABEL_STUDIO_SDK`` at DIR to run this. Skipped otherwise.
"""

from __future__ import annotations

import io
import os
import sys

import polars as pl
import pytest
from PIL import Image

from seke import review
from tests.expectations import frames as F

if os.environ.get("SEKE_LABEL_STUDIO_SDK"):
    sys.path.append(os.environ["SEKE_LABEL_STUDIO_SDK"])  # after the venv: its pins win
li_mod = pytest.importorskip("label_studio_sdk.label_interface",
                             reason="label-studio-sdk not importable (set SEKE_LABEL_STUDIO_SDK)")


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), i).save(buf, format="PNG")
    return buf.getvalue()


def test_config_predictions_and_annotations_agree_with_label_studio() -> None:
    li = li_mod.LabelInterface(review.labeling_config())
    rows = F.label_rows(4)
    for r in rows:
        r["status"], r["abstain_reason"] = "abstained", "uncertain"
    rows[3]["aus"] = []
    faces = F.raw_faces(4).with_columns(pl.Series("crop_png", [_png(i) for i in range(4)],
                                                  dtype=pl.Binary))
    tasks = review.export_tasks(F.verified_labels(rows), faces, source="s", batch="b")
    assert len(tasks) == 4
    for t in tasks:
        assert li.validate_prediction(t["predictions"][0], return_errors=True) == []
    bad = {"result": [{"from_name": "aus", "to_name": "image", "type": "choices",
                       "value": {"choices": ["AU99"]}}]}
    assert li.validate_prediction(bad, return_errors=True)  # the validator is not vacuous
    parsed = 0
    for _ in range(10):  # Label Studio's own (random) sample annotations parse with our importer
        ann = li.generate_sample_annotation()
        try:
            got = review.parse_annotation(ann["result"])
        except ValueError as exc:  # random picks may combine "none" with AUs: a real error
            assert "combined" in str(exc)
            continue
        parsed += 1
        assert got["expression"] in review.EXPRESSIONS
        assert -1 <= got["valence"] <= 1 and -1 <= got["arousal"] <= 1
    assert parsed
