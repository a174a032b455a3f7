"""The LiteRT face models on real photos (cached sample photos, real CK+ crops)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seke import weights

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def _need_weights():
    try:
        weights.path_of("face_landmarker.task")
        weights.path_of("emotion_model_quantized.tflite")
        weights.path_of("t1.jpg")
    except weights.WeightsMissing as exc:
        pytest.skip(f"offline weights not fetched: {exc}")


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(weights.samples_dir() / name).convert("RGB"))


@pytest.mark.parametrize("name,expected", [("t1.jpg", 6), ("Tom_Hanks_54745.png", 1), ("astronaut.png", 1),
                                           ("chelsea.png", 0)])
def test_detector_counts_faces_in_sample_photos(name, expected):
    _need_weights()
    from seke.vision import detect_faces

    dets = detect_faces(_photo(name))
    assert len(dets) == expected
    img = _photo(name)
    for d in dets:
        x, y, w, h = d.bbox
        assert w > 10 and h > 10 and 0.5 <= d.score <= 1.0
        assert -w / 2 <= x <= img.shape[1] and -h / 2 <= y <= img.shape[0]
        assert d.keypoints.shape == (6, 2)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_detector_handles_aspect_ratio_and_tight_crops():
    _need_weights()
    from seke.vision import detect_faces

    img = _photo("astronaut.png")
    (d,) = detect_faces(img)
    x, y, w, h = (int(v) for v in d.bbox)
    # a tight crop (face fills the frame) is found through the padded retry
    tight = img[max(y, 0):y + h, max(x, 0):x + w]
    assert len(detect_faces(tight)) == 1
    # a very wide canvas (aspect 4:1) with the face on the right: box maps back to original pixels
    wide = np.zeros((512, 2048, 3), dtype=np.uint8)
    wide[:, 1536:] = img
    (dw,) = detect_faces(wide)
    assert abs(dw.bbox[0] - (d.bbox[0] + 1536)) < 15 and abs(dw.bbox[1] - d.bbox[1]) < 15


def test_detector_rejects_bad_arrays():
    _need_weights()
    from seke.vision import detect_faces

    with pytest.raises(ValueError):
        detect_faces(np.zeros((10, 10, 3), dtype=np.uint16))
    assert detect_faces(np.zeros((1, 1, 3), dtype=np.uint8)) == []


def test_blendshapes_and_expression_see_a_smile():
    _need_weights()
    manifest = SHARED / "ckplus" / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"shared data missing: {manifest}")
    import polars as pl

    from seke.vision import BLENDSHAPE_NAMES, blendshapes, expression_probs, mesh_for_crop

    m = pl.read_csv(manifest)
    happy = m.filter(pl.col("expression") == "happiness")["image"][0]
    sad = m.filter(pl.col("expression") == "sadness")["image"][0]
    smile = BLENDSHAPE_NAMES.index("mouthSmileLeft")
    out = {}
    for key, rel in (("happy", happy), ("sad", sad)):
        rgb = np.asarray(Image.open(SHARED / "ckplus" / rel).convert("RGB"))
        mesh = mesh_for_crop(rgb)
        assert mesh.points.shape == (478, 3) and mesh.presence > 0.5
        out[key] = (blendshapes(mesh)[smile], expression_probs(rgb))
    assert out["happy"][0] > 0.4 > out["sad"][0]
    assert max(out["happy"][1], key=out["happy"][1].get) == "happiness"
    assert out["happy"][1]["contempt"] == 0.0 and abs(sum(out["happy"][1].values()) - 1) < 1e-6


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    from seke.vision import runtime

    monkeypatch.setattr(weights, "_CACHE_DIR", tmp_path)
    with pytest.raises(weights.WeightsMissing, match="fetch-weights"):
        runtime._model_bytes("face_detector")
