"""The compact .npz is lossless and carries labels and metadata."""

from __future__ import annotations

import numpy as np
import pytest

from seke.train.arrays import from_feid, from_manifest
from seke.train.packing import decode_images, encode_images, load_npz, save_npz
from seke.train.run import shared_data_dir
from tests.seke.train.synthetic import feid_rows


def test_med_codec_is_exact_on_extremes():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 9, 11), dtype=np.uint8)
    imgs[0] = 0
    imgs[1] = 255
    imgs[2, ::2] = 255
    blob = encode_images(imgs)
    assert np.array_equal(decode_images(blob, imgs.shape), imgs)


def test_npz_round_trip(tmp_path):
    arrays, _ = from_feid(feid_rows(5), image_size=24)
    arrays.split[:] = "train"
    path = save_npz(arrays, tmp_path / "x.npz", {"data_version": "abc"})
    back, meta = load_npz(path)
    assert meta == {"data_version": "abc"}
    for name in ("images", "expression", "expression_w", "va", "va_w", "aus", "aus_w"):
        assert np.array_equal(getattr(back, name), getattr(arrays, name)), name
    assert list(back.face_id) == list(arrays.face_id) and list(back.split) == ["train"] * 5


def test_real_fer_faces_compress_below_raw(tmp_path):
    folder = shared_data_dir() / "fer2013"
    if not (folder / "manifest.csv").is_file():
        pytest.skip(f"no fer2013 data at {folder}")
    arrays, errors = from_manifest(folder, splits=["validation"], limit=300)
    assert len(arrays) == 300 and not errors
    path = save_npz(arrays, tmp_path / "fer.npz")
    back, _ = load_npz(path)
    assert np.array_equal(back.images, arrays.images)
    assert path.stat().st_size < 0.9 * arrays.images.nbytes
