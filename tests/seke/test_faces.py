"""Decoding, validation, pass-through crops and manifest reading (no models needed)."""

from pathlib import Path

import pytest
from PIL import Image

from seke.faces import BadImage, decode_image, ingest_folder, read_manifest
from tests.badfiles import png_header_only, write_bad_files


@pytest.fixture
def face_png(tmp_path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    p = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(p)
    return p


def test_bomb_is_refused_before_decoding():
    with pytest.raises(BadImage) as e:
        decode_image(png_header_only(20000, 20000))
    assert e.value.reason == "oversized"


def test_every_bad_file_gets_its_reason_and_the_rest_lands(tmp_path, face_png):
    batch = tmp_path / "batch"
    expected = write_bad_files(batch, face_png)
    (batch / "good.png").write_bytes(face_png.read_bytes())
    (batch / "copy_of_good.png").write_bytes(face_png.read_bytes())

    def no_faces(rgb):  # a detector that never finds a face: photos end as no_face
        return []

    crops, rejected = ingest_folder(batch, detector=no_faces)
    reasons = {r.item_id.split("#")[0]: r.reason for r in rejected}
    for name, reason in expected.items():
        if reason is None:
            assert name not in reasons, f"{name} should have been ingested, got {reasons.get(name)}"
        else:
            assert reasons.get(name) == reason, f"{name}: {reasons.get(name)} != {reason}"
    assert sum(r == "duplicate" for r in reasons.values()) == 1
    names = {c.file_name for c in crops}
    assert {"cmyk.jpg", "sixteen_bit.png", "webp_named.jpg"} <= names
    assert len({c.face_id for c in crops}) == len(crops)
    assert all(len(c.face_id) == 64 for c in crops)


def test_manifest_in_shared_format_is_read_as_is(shared_data):
    m = read_manifest(shared_data / "ckplus")
    row = next(iter(m.values()))
    assert row.expression in {"anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"}
    assert row.aus is not None and row.subject_id
    fer = read_manifest(shared_data / "fer2013")
    assert next(iter(fer.values())).split in {"train", "validation"}
    assert next(iter(fer.values())).aus is None


def test_manifest_rows_without_a_file_are_quarantined(tmp_path, face_png):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "here.png").write_bytes(face_png.read_bytes())
    (batch / "manifest.csv").write_text("image,expression\nhere.png,happiness\ngone.png,anger\n")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [c.file_name for c in crops] == ["here.png"]
    assert [(r.item_id, r.reason) for r in rejected] == [("gone.png", "missing_file")]


def test_symlinked_image_folders_are_followed(tmp_path, face_png):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.png").write_bytes(face_png.read_bytes())
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "images").symlink_to(store, target_is_directory=True)
    (batch / "manifest.csv").write_text("image,expression\nimages/a.png,sadness\n")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [(c.file_name, c.known.expression) for c in crops] == [("images/a.png", "sadness")]
    assert rejected == []
